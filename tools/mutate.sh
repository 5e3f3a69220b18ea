#!/usr/bin/env bash
# Mutation testing of the core with cosmic-ray (a development tool: not part of CI).
#
#   tools/mutate.sh [MODULE …]        default: the solvers, operators, implicit differentiation, robustness
#   MUTATE_TESTS="tests/test_x.py …"  the tests each mutant runs (default: the numerical and robustness tests)
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
"$py/cosmic-ray" baseline cr.toml
"$py/cosmic-ray" exec cr.toml "$out/session.sqlite"
"$py/cr-report" --show-pending "$out/session.sqlite" > "$out/report.txt" || true
tail -n 3 "$out/report.txt"
