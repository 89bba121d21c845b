module polytrace.local/pg_cost_go

go 1.22

require github.com/lib/pq v1.10.7

// Debian's golang-github-lib-pq-dev (scripts/setup-databases.sh installs
// it): there is no Go module proxy to fetch it from here.
replace github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
