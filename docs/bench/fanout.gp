# gnuplot -c docs/bench/fanout.gp  (from the repository root)
set terminal pngcairo size 800,500 font ",10"
set output "docs/bench/fanout.png"
set title "nkp-bench fanout: rotation vs bare nng floor (2 cores, shared and loaded)"
set xlabel "hosts (N)"
set ylabel "ms"
set key top left
set grid
set logscale y
plot "docs/bench/fanout.dat" using 1:2 with linespoints title "rotate\\_ms, first measurement", \
     "docs/bench/fanout-after.dat" using 1:2 with linespoints title "rotate\\_ms, after the reconciler changes", \
     "docs/bench/fanout.dat" using 1:4 with linespoints title "nkpd CPU per rotation (ms), first", \
     "docs/bench/fanout-after.dat" using 1:4 with linespoints title "nkpd CPU per rotation (ms), after", \
     "docs/bench/fanout.dat" using 1:3 with linespoints title "floor\\_ms, first", \
     "docs/bench/fanout-after.dat" using 1:3 with linespoints title "floor\\_ms, after"
