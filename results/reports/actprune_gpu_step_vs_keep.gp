set terminal pngcairo size 900,600 enhanced font ',11'
set output "results/reports/actprune_gpu_step_vs_keep.png"
set title "training step (ms), same runs" noenhanced
set xlabel "keep" noenhanced
set ylabel "t_step_ms (last)" noenhanced
set key outside right top noenhanced
set grid
set offsets graph 0.04, graph 0.04, graph 0.05, graph 0.05
plot "results/reports/actprune_gpu_step_vs_keep.dat" index 0 using 1:2:3 with yerrorlines pt 7 ps 1.2 title "criterion=dense", \
     "results/reports/actprune_gpu_step_vs_keep.dat" index 1 using 1:2:3 with yerrorlines pt 7 ps 1.2 title "criterion=l2", \
     "results/reports/actprune_gpu_step_vs_keep.dat" index 2 using 1:2:3 with yerrorlines pt 7 ps 1.2 title "criterion=random"
