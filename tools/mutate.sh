#!/usr/bin/env bash
# Mutation testing of the core with cosmic-ray (a development tool: not part of CI).
#
#   tools/mutate.sh [MODULE …]        default: the solvers, operators, implicit differentiation, robustness
#   MUTATE_TESTS="tests/test_x.py …"  the tests each mutant runs (default: the numerical and robustness tests)
#   MUTATE_SAMPLE=N [MUTATE_SEED=S]   run a uniform random sample of N mutants (an estimate of the score in
#                                     hours instead of days; the report says how many were drawn of how many)
#
# cosmic-ray edits the files it mutates, so it works on a throwaway copy of src/ and tests/; the session
# database and the report land in runs/mutation/ (report.txt lists every surviving mutant).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin
[ -x "$py/cosmic-ray" ] || "$py/pip" install --quiet "cosmic-ray>=8.7"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/src" "$root/tests" "$root/pyproject.toml" "$work/"
if [ $# -eq 0 ]; then
  set -- src/mondeq/solvers src/mondeq/operators src/mondeq/implicit.py src/mondeq/robustness
fi
tests=${MUTATE_TESTS:-tests/test_activations.py tests/test_operators.py tests/test_solvers.py tests/test_anderson.py \
tests/test_gradients.py tests/test_memory.py tests/test_conv.py tests/test_multitier.py tests/test_robustness.py}
modules=$(printf '"%s", ' "$@")
cat > "$work/cr.toml" <<CONF
[cosmic-ray]
module-path = [${modules%, }]
timeout = 600.0
excluded-modules = []
test-command = "$py/python -m pytest -x -q -p no:cacheprovider -p no:randomly $tests"

[cosmic-ray.distributor]
name = "local"
CONF
out=$root/runs/mutation
mkdir -p "$out"
cd "$work"
export PYTHONPATH=$work/src
"$py/cosmic-ray" init cr.toml "$out/session.sqlite"
if [ -n "${MUTATE_SAMPLE:-}" ]; then  # keep a random sample of the work items, drop the rest
  "$py/python" - "$out/session.sqlite" "$MUTATE_SAMPLE" "${MUTATE_SEED:-0}" <<'PY'
import random, sqlite3, sys
db, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db)
jobs = sorted(r[0] for r in con.execute("SELECT job_id FROM work_items"))
keep = set(random.Random(seed).sample(jobs, min(n, len(jobs))))
drop = [(j,) for j in jobs if j not in keep]
con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
con.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
con.commit()
print(f"sampled {len(keep)} of {len(jobs)} mutants (seed {seed})")
PY
fi
"$py/cosmic-ray" baseline cr.toml
"$py/cosmic-ray" exec cr.toml "$out/session.sqlite"
"$py/cr-report" --show-diff --show-pending "$out/session.sqlite" > "$out/report.txt" || true
tail -n 3 "$out/report.txt"
