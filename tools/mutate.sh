#!/usr/bin/env bash
# Mutation testing of the core with cosmic-ray (a development tool: not part of CI).
#
#   tools/mutate.sh [MODULE …]        default: the solvers, operators, implicit differentiation, robustness
#   MUTATE_TESTS="tests/test_x.py …"  the tests every mutant runs (default: the tests of the mutated file, from
#                                     the map below: each mutant runs only the files that exercise its module)
#   MUTATE_SAMPLE=N [MUTATE_SEED=S]   run a uniform random sample of N mutants (an estimate of the score in
#                                     hours instead of days; the report says how many were drawn of how many)
#
# cosmic-ray edits the files it mutates, so it works on a throwaway copy of src/ and tests/ (and finds the
# mutated file by comparing the copy with a pristine one); the session database and the report land in
# runs/mutation/ (report.txt lists every surviving mutant with its diff).
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
cp -r "$root/src" "$work/pristine"
# the tests of each module, cheapest first (pytest -x stops at the first failure)
cat > "$work/select-tests" <<'SEL'
#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${MUTATE_TESTS:-}" ]; then exec "$PY" -m pytest -x -q -p no:cacheprovider -p no:randomly $MUTATE_TESTS; fi
changed=$(diff -rq -x __pycache__ src pristine | awk '{print $2}' || true)
case "$changed" in
  src/mondeq/solvers/*) t="operators solvers anderson memory gradients nemon opteq conv multitier" ;;
  src/mondeq/operators/conv.py) t="operators conv robustness gradients" ;;
  src/mondeq/operators/multitier.py) t="operators multitier robustness" ;;
  src/mondeq/operators/nemon.py) t="operators nemon interval" ;;
  src/mondeq/operators/opteq.py) t="operators opteq robustness" ;;
  src/mondeq/operators/*) t="operators solvers gradients nemon opteq conv robustness" ;;
  src/mondeq/implicit.py) t="memory gradients nemon opteq conv multitier" ;;
  src/mondeq/robustness/*) t="robustness interval nemon opteq certified_training composed" ;;
  *) t="activations operators solvers anderson memory gradients nemon opteq conv multitier robustness interval \
certified_training composed" ;;
esac
exec "$PY" -m pytest -x -q -p no:cacheprovider -p no:randomly $(printf 'tests/test_%s.py ' $t)
SEL
chmod +x "$work/select-tests"
modules=$(printf '"%s", ' "$@")
cat > "$work/cr.toml" <<CONF
[cosmic-ray]
module-path = [${modules%, }]
timeout = 600.0
excluded-modules = []
test-command = "$work/select-tests"

[cosmic-ray.distributor]
name = "local"
CONF
out=$root/runs/mutation
mkdir -p "$out"
cd "$work"
export PYTHONPATH=$work/src PY=$py/python MUTATE_TESTS=${MUTATE_TESTS:-}
"$py/cosmic-ray" init --force cr.toml "$out/session.sqlite"
# drop mutants inside annotations: with `from __future__ import annotations` they are never evaluated, so each
# is equivalent by construction (a third of the survivors of an unfiltered sample)
"$py/python" - "$out/session.sqlite" <<'PY'
import ast, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
spans: dict[str, list[tuple[int, int, int, int]]] = {}
def annotation_spans(path: str) -> list[tuple[int, int, int, int]]:
    if path not in spans:
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        def char_col(row: int, byte_col: int) -> int:  # ast counts UTF-8 bytes, cosmic-ray characters
            return len(lines[row - 1].encode()[:byte_col].decode(errors="ignore"))
        nodes = []
        lazy = "from __future__ import annotations" in text  # else annotations are evaluated
        for node in ast.walk(ast.parse(text)) if lazy else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
                nodes.append(node.returns)
            elif isinstance(node, ast.arg) and node.annotation is not None:
                nodes.append(node.annotation)
            elif isinstance(node, ast.AnnAssign):
                nodes.append(node.annotation)
        spans[path] = [(n.lineno, char_col(n.lineno, n.col_offset), n.end_lineno, char_col(n.end_lineno, n.end_col_offset))
                       for n in nodes]
    return spans[path]
drop = []
for job, path, row, col in con.execute("SELECT job_id, module_path, start_pos_row, start_pos_col FROM mutation_specs"):
    if any((r0, c0) <= (row, col) < (r1, c1) for r0, c0, r1, c1 in annotation_spans(path)):
        drop.append((job,))
con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
con.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
con.commit()
print(f"dropped {len(drop)} mutants inside annotations")
PY
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
