set terminal pngcairo size 900,600 enhanced font ',11'
set output "results/reports/actprune_cpu_acc_vs_mem_criteria.png"
set title "actprune (block 8): test accuracy vs peak memory reduction by criterion" noenhanced
set xlabel "mem_reduction" noenhanced
set ylabel "test_acc (last)" noenhanced
set key outside right top noenhanced
set grid
plot "results/reports/actprune_cpu_acc_vs_mem_criteria.dat" index 0 using 1:2:3 with yerrorlines title "criterion=dense", \
     "results/reports/actprune_cpu_acc_vs_mem_criteria.dat" index 1 using 1:2:3 with yerrorlines title "criterion=l2", \
     "results/reports/actprune_cpu_acc_vs_mem_criteria.dat" index 2 using 1:2:3 with yerrorlines title "criterion=random", \
     "results/reports/actprune_cpu_acc_vs_mem_criteria.dat" index 3 using 1:2:3 with yerrorlines title "criterion=topk_unstructured"
