#!/usr/bin/env bash
# The controlled-sentiment frontier end to end (README.md beside this file says what and why):
#
#   recipes/sentiment/run.sh MODEL OUT        e.g. MODEL=$(bin/tether models pull smollm2-135m-instruct)
#
# pairs of MODEL's samples labelled by VADER -> reward model -> DPO, PPO, GRPO and RLOO at three β each ->
# `tether eval` of every policy on the held-out prompts -> best-of-n against the RM -> frontier.py (table
# and plot in OUT/frontier.md, OUT/frontier.png). A step whose OUT/.../summary.json exists is skipped, and
# a training run stopped part-way resumes from its last checkpoint, so an interrupted run continues.
# DRY_RUN=1 prints the commands instead of running them (the test reads them). The β lists and the noise
# can be set from the environment (DPO_BETAS="0.1 1" ...), and METHODS chooses the trained methods (default
# "dpo ppo rloo grpo"; best-of-n always runs).
set -euo pipefail
MODEL=${1:?usage: run.sh MODEL OUT}
OUT=${2:?usage: run.sh MODEL OUT}
R=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$R/../.." && pwd)
TETHER=${TETHER:-$ROOT/bin/tether}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DPO_BETAS=${DPO_BETAS:-"0.05 0.1 0.5"}   # DPO's β (the DPO paper's sentiment runs: 0.05 to 5)
RL_BETAS=${RL_BETAS:-"0.02 0.1 0.5"}     # PPO's and RLOO's kl.beta, RM units per nat
GRPO_BETAS=${GRPO_BETAS:-"0.01 0.04 0.2"} # GRPO's grpo.beta (k3 in the loss, group-scaled rewards)
BON_NS=${BON_NS:-"1 4 16"}               # best-of-n against the RM
NOISE=${NOISE:-0.25}                     # Bradley-Terry temperature of the VADER labels
METHODS=${METHODS:-"dpo ppo rloo grpo"}  # the trained methods, each at its three β
TOKENS=48                                # new tokens per response, everywhere
PROMPTS=$R/data

step() {  # step DIR COMMAND...: run COMMAND unless DIR/summary.json exists (DRY_RUN=1: print it). A training
          # run stopped part-way (DIR holds its config.yaml, no summary) continues from its last checkpoint.
    local dir=$1; shift
    if [[ -f $dir/summary.json ]]; then echo "run.sh: $dir done, skipping"; return; fi
    if [[ -f $dir/config.yaml && " rm dpo ppo rloo grpo " == *" $2 "* ]]; then set -- "$@" --resume; fi
    if [[ ${DRY_RUN:-0} == 1 ]]; then echo "$*"; return; fi
    echo "run.sh: $*"
    "$@"
}

if [[ ${DRY_RUN:-0} != 1 ]]; then  # provenance of each invocation (a resumed run has several): frontier.py
    mkdir -p "$OUT"
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
    cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
    printf '{"date": "%s", "commit": "%s", "cpu": "%s", "cores": %s, "load": %s}\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$cpu" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" \
        >> "$OUT/invocations.jsonl"
fi
for split in train test; do
    f=$OUT/pairs/$split.jsonl
    if [[ -f ${f%.jsonl}.summary.json ]]; then echo "run.sh: $f done, skipping"; continue; fi
    cmd=("$TETHER" data pairs --policy "$MODEL" --prompts "$PROMPTS/prompts.$split.jsonl"
         --reward tether.sentiment:vader --out "$f" --noise "$NOISE" --max-new-tokens $TOKENS --seed 0)
    if [[ ${DRY_RUN:-0} == 1 ]]; then echo "${cmd[*]}"; else "${cmd[@]}"; fi
done

pairs=(data.train="$OUT/pairs/train.jsonl" data.test="$OUT/pairs/test.jsonl")
prompts=(data.train="$PROMPTS/prompts.train.jsonl")   # held out: `tether eval` below, for every policy
step "$OUT/rm" "$TETHER" rm --config "$R/rm.yaml" --out "$OUT/rm" model="$MODEL" "${pairs[@]}"
RM=$OUT/rm/model

for b in $DPO_BETAS; do
    [[ " $METHODS " == *" dpo "* ]] || break
    step "$OUT/dpo/beta-$b" "$TETHER" dpo --config "$R/dpo.yaml" --out "$OUT/dpo/beta-$b" policy="$MODEL" \
        "${pairs[@]}" beta="$b"
done
for algo in ppo rloo grpo; do
    [[ " $METHODS " == *" $algo "* ]] || continue
    betas=$RL_BETAS key=kl.beta
    if [[ $algo == grpo ]]; then betas=$GRPO_BETAS key=grpo.beta; fi
    for b in $betas; do
        step "$OUT/$algo/beta-$b" "$TETHER" $algo --config "$R/$algo.yaml" --out "$OUT/$algo/beta-$b" \
            policy="$MODEL" reward.source="$RM" "${prompts[@]}" "$key=$b"
    done
done

# every policy measured alike: the held-out prompts, one sample each from it and from the base; VADER is the
# gold beside the RM, so that the reward-hacking verdict can check "RM up while VADER falls"
for run in "$OUT"/{dpo,ppo,rloo,grpo}/beta-*; do
    [[ -d $run ]] || continue
    name=$(basename "$(dirname "$run")")-$(basename "$run")
    step "$OUT/eval/$name" "$TETHER" eval --policy "$run/model" --base "$MODEL" --rm "$RM" \
        --gold tether.sentiment:vader --prompts "$PROMPTS/prompts.test.jsonl" --out "$OUT/eval/$name" \
        max_prompts=120 max_new_tokens=$TOKENS repetition_n=4 probes=never
done

# shellcheck disable=SC2086
step "$OUT/best_of_n" "$PYTHON" "$R/best_of_n.py" --model "$MODEL" --rm "$RM" \
    --prompts "$PROMPTS/prompts.test.jsonl" --out "$OUT/best_of_n" --ns $BON_NS --max-new-tokens $TOKENS
if [[ ${DRY_RUN:-0} == 1 ]]; then exit 0; fi
"$PYTHON" "$R/frontier.py" "$OUT"
