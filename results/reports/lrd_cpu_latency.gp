set terminal pngcairo size 900,600 enhanced font ',11'
set output "results/reports/lrd_cpu_latency.png"
set title "fwd+bwd latency of the factored MLP layer vs rank (x), batch 128, one core (fastest of 15)" noenhanced
set xlabel "step" noenhanced
set ylabel "latency_min_ms" noenhanced
set key outside right top noenhanced
set grid
plot "results/reports/lrd_cpu_latency.dat" index 0 using 1:2 with lines lw 2 title "layer=mlp.layers.1", \
     "results/reports/lrd_cpu_latency.dat" index 1 using 1:2 with lines lw 2 title "layer=mlp.layers.2"
