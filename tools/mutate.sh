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
# drop the mutants inside annotations (with `from __future__ import annotations` they are never evaluated, so
# each is equivalent by construction: 19 of the 34 survivors of an unfiltered 100-mutant sample), then, with
# MUTATE_SAMPLE, keep a uniform random sample of the rest
"$py/python" - "$out/session.sqlite" "${MUTATE_SAMPLE:-0}" "${MUTATE_SEED:-0}" <<'PY'
import ast, random, sqlite3, sys
db, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db)
spans: dict[str, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
def annotation_spans(path: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    if path not in spans:
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        def at(row: int, byte_col: int) -> tuple[int, int]:  # ast counts UTF-8 bytes, cosmic-ray characters
            return row, len(lines[row - 1].encode()[:byte_col].decode(errors="ignore"))
        lazy = "from __future__ import annotations" in text  # else annotations are evaluated
        nodes = [n.returns if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) else n.annotation
                 for n in (ast.walk(ast.parse(text)) if lazy else ())
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.arg, ast.AnnAssign))]
        spans[path] = [(at(a.lineno, a.col_offset), at(a.end_lineno, a.end_col_offset)) for a in nodes if a is not None]
    return spans[path]
specs = con.execute("SELECT job_id, module_path, start_pos_row, start_pos_col FROM mutation_specs").fetchall()
annotated = {job for job, path, row, col in specs if any(lo <= (row, col) < hi for lo, hi in annotation_spans(path))}
rest = sorted(job for job, *_ in specs if job not in annotated)
keep = set(random.Random(seed).sample(rest, min(n, len(rest)))) if n else set(rest)
drop = [(job,) for job, *_ in specs if job not in keep]
con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
con.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
con.commit()
print(f"dropped {len(annotated)} mutants inside annotations; running {len(keep)} of {len(rest)} (seed {seed})")
PY
"$py/cosmic-ray" baseline cr.toml
"$py/cosmic-ray" exec cr.toml "$out/session.sqlite"
"$py/cr-report" --show-diff --show-pending "$out/session.sqlite" > "$out/report.txt" || true
tail -n 3 "$out/report.txt"
