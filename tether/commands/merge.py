"""Merge a LoRA adapter into its base model: full weights (safetensors) + tokenizer, loadable by
`from_pretrained` (a reward-model adapter gives an AutoModelForSequenceClassification directory).

Example: tether merge runs/dpo/adapter --out merged/dpo
         tether merge runs/dpo/adapter --out merged/dpo --base models/sft    # the base moved
The base is the model named in the adapter's adapter_config.json unless --base is given. OUT must be new,
empty or an earlier `tether merge` output (any other directory is refused, never deleted); the model is
written completely to OUT/.tmp-merged first, then replaces the earlier merge's files (a file you added to
OUT stays).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", metavar="ADAPTER_DIR", help="an adapter directory, e.g. RUN/adapter")
    parser.add_argument("--out", metavar="DIR", required=True, help="where the merged model goes")
    parser.add_argument("--base", metavar="DIR", help="the base model (default: from adapter_config.json)")


def run(args: argparse.Namespace) -> int:
    from tether.lora_merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, base=args.base)
    print(f"merged model: {out}")
    return 0
