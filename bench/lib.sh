# Shell helpers of the read benchmarks (sourced by bench/read.sh and bench/read_cold.sh).
py() { /usr/bin/python3 -c "$1"; }                      # py 'PYTHON': runs it with Debian's python3
median() { /usr/bin/python3 -c "import statistics as s, sys; print(s.median(float(v) for v in sys.argv[1:]))" "$@"; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }  # field 'k=v k2=v2' k2 -> v2
fmt() { py "print(f'{$1:$2}')"; }                       # fmt VALUE FORMAT
