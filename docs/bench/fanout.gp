# gnuplot -c docs/bench/fanout.gp  (from the repository root)
set terminal pngcairo size 800,500 font ",10"
set output "docs/bench/fanout.png"
set title "nkp-bench fanout: rotation vs bare nng floor (2 cores shared by nkpd and all hosts)"
set xlabel "hosts (N)"
set ylabel "ms"
set key bottom right
set grid
set logscale y
plot "docs/bench/fanout-keylog.dat" using 1:2 with linespoints lw 2 title "rotate\\_ms, latest (host key log)", \
     "docs/bench/fanout-keylog.dat" using 1:3 with linespoints lw 2 title "floor\\_ms, same runs", \
     "docs/bench/fanout-keylog.dat" using 1:($3*2) with lines dt 2 title "2 x floor\\_ms", \
     "docs/bench/fanout-durable.dat" using 1:2 with linespoints title "rotate\\_ms, before the host key log", \
     "docs/bench/fanout-sessions.dat" using 1:2 with linespoints title "rotate\\_ms, channel sessions (quiet machine)", \
     "docs/bench/fanout-after.dat" using 1:2 with linespoints title "rotate\\_ms, first round of fixes (loaded)", \
     "docs/bench/fanout.dat" using 1:2 with linespoints title "rotate\\_ms, first measurement (loaded)"
