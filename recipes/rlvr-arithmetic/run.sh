#!/usr/bin/env bash
# The RLVR recipe end to end (see README.md): the base model's held-out accuracy, GRPO, RLOO, the table.
#
#   recipes/rlvr-arithmetic/run.sh MODEL OUT [KEY=VALUE ...]
#
# MODEL: the pulled SmolLM2-135M-Instruct (`tether models pull smollm2-135m-instruct` prints its directory);
# OUT: a new directory for the runs (OUT/base, OUT/grpo, OUT/rloo, OUT/results.md). KEY=VALUE overrides go
# to both RL runs (e.g. iterations=12). EVAL_PROMPTS (200) and NEW_TOKENS (64) size every evaluation alike.
# ALGOS ("grpo rloo") chooses the RL runs. WARM_START (1) first fine-tunes MODEL on data/sft.jsonl into
# OUT/sft (sft.yaml; SFT_ARGS: its KEY=VALUE overrides) and starts the RL runs from OUT/sft/model; 0 starts
# them from MODEL. TETHER and PYTHON name the commands (default: bin/tether and .venv/bin/python of this
# checkout).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 MODEL OUT [KEY=VALUE ...]" >&2
    exit 2
fi
model=$1
out=$2
shift 2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
recipe=recipes/rlvr-arithmetic
read -r -a tether <<< "${TETHER:-$root/bin/tether}"
read -r -a python <<< "${PYTHON:-$root/.venv/bin/python}"
eval_prompts=${EVAL_PROMPTS:-200}
new_tokens=${NEW_TOKENS:-64}
gold=tether.verifiable:correct
cd "$root"

"${python[@]}" "$recipe/make_data.py" --check  # the shipped problems are the generator's
mkdir -p "$out"
{  # the machine the figures come from, for the table
    echo "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs"
} > "$out/machine.txt"

echo "== base model: held-out accuracy (tether eval of the model against itself)"
"${tether[@]}" eval --policy "$model" --base "$model" --prompts "$recipe/data/test.jsonl" --gold "$gold" \
    --out "$out/base" max_prompts="$eval_prompts" max_new_tokens="$new_tokens" probes=never

start=$model
if [[ ${WARM_START:-1} == 1 ]]; then  # the RL runs start from the SFT model: answers in the asked-for form
    echo "== SFT warm start on $recipe/data/sft.jsonl"
    read -r -a sft_args <<< "${SFT_ARGS:-}"
    "${tether[@]}" sft --config "$recipe/sft.yaml" --out "$out/sft" model="$model" "${sft_args[@]}"
    start=$out/sft/model
fi

for algo in ${ALGOS:-grpo rloo}; do
    echo "== $algo"
    "${tether[@]}" "$algo" --config "$recipe/$algo.yaml" --out "$out/$algo" policy="$start" \
        eval.max_prompts="$eval_prompts" rollout.max_new_tokens="$new_tokens" "$@"
done

"${python[@]}" "$recipe/figures.py" "$out" | tee "$out/results.md"
