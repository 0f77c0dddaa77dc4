set terminal pngcairo size 900,600 enhanced font ',11'
set output "results/reports/actprune_cpu_acc_vs_mem_l2.png"
set title "actprune (l2): test accuracy vs peak memory reduction, mean +- std over 3 seeds" noenhanced
set xlabel "mem_reduction" noenhanced
set ylabel "test_acc (last)" noenhanced
set key outside right top noenhanced
set grid
plot "results/reports/actprune_cpu_acc_vs_mem_l2.dat" index 0 using 1:2:3 with yerrorlines title "block=16", \
     "results/reports/actprune_cpu_acc_vs_mem_l2.dat" index 1 using 1:2:3 with yerrorlines title "block=32", \
     "results/reports/actprune_cpu_acc_vs_mem_l2.dat" index 2 using 1:2:3 with yerrorlines title "block=64", \
     "results/reports/actprune_cpu_acc_vs_mem_l2.dat" index 3 using 1:2:3 with yerrorlines title "block=8"
