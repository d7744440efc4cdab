"""The `medtune` command: parse arguments, load the config, call the stage. No training logic here.

Over 500 lines because every command's options are declared here, in one parser (most lines are `add_argument`,
each range-checked): `medtune --help` and tests/test_cli_options.py's sweep over every numeric option see them
all in one place. Each `cmd_*` function is a few lines that hand the parsed options to the module doing the work.
"""

from __future__ import annotations

import argparse
import os
import sys

from medtune.errors import MedtuneError
from medtune.stages import STAGES, get_stage


def _split_recipe(args: list[str]):
    """`[recipe.yaml] key=value ...` -> (recipe or None, overrides)."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def cmd_stage(ns) -> int:
    from medtune.config import load_config

    if ns.command == "rm" and ns.args[:1] == ["score"]:
        return cmd_rm_score(ns.args[1:])
    module, cls = get_stage(ns.command)
    recipe, overrides = _split_recipe(ns.args)
    cfg = load_config(cls, recipe, overrides)
    module.run(cfg)
    return 0


def rm_score_parser() -> argparse.ArgumentParser:
    from medtune.config import CommandParser, int_option

    p = CommandParser(prog="medtune rm score", description="score answers with a trained reward model")
    p.add_argument("run", help="a folder written by `medtune rm`")
    p.add_argument("file", help="a preference file (scores chosen and rejected) or a dialogue file (its last answer)")
    p.add_argument("-o", "--output", help="write one JSON line of rewards per record here")
    p.add_argument("--batch-size", type=int_option(1), default=8)
    return p


def cmd_rm_score(args: list[str]) -> int:
    ns = rm_score_parser().parse_args(args)
    from medtune.stages import rm

    summary = rm.score_file(ns.run, ns.file, ns.output, ns.batch_size)
    if "accuracy" in summary:
        print(f"{summary['pairs']} pairs: accuracy {summary['accuracy']:.3f}, mean margin {summary['margin']:.3f}, "
              f"rewards {summary['reward_mean']:.3f} +- {summary['reward_std']:.3f}")
    else:
        print(f"{summary['answers']} answers: reward {summary['reward_mean']:.3f} +- {summary['reward_std']:.3f}")
    if ns.output:
        print(f"wrote {ns.output}")
    return 0


def cmd_validate(ns) -> int:
    from medtune.config import load_config, read_yaml

    recipe, overrides = _split_recipe(ns.args)
    if recipe is None:
        raise MedtuneError("validate needs a recipe file", hint="medtune validate recipes/sft_demo.yaml")
    stage = ns.stage or read_yaml(recipe).get("stage")
    if stage == "pipeline":
        from medtune import pipeline

        output_dir, steps = pipeline.check(recipe)
        print(f"{recipe}: a pipeline of {len(steps)} steps into {output_dir}: "
              + ", ".join(f"{s.name} ({s.run})" for s in steps) + "; every step's recipe loads")
        return 0
    if not isinstance(stage, str) or stage not in STAGES:
        raise MedtuneError(
            f"cannot tell which stage this recipe is for (stage: {stage!r})",
            where=recipe,
            hint=f"add `stage: sft` to the recipe or pass --stage (one of: {', '.join(STAGES)})",
        )
    module, cls = get_stage(stage)
    cfg = load_config(cls, recipe, overrides)
    output_dir = getattr(cfg, "output_dir", None)
    if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise MedtuneError("output_dir is a file, not a folder", where=output_dir, hint="choose another output_dir")
    for line in module.validate(cfg):
        print(line)
    model = getattr(cfg, "model", None)
    if model is not None:
        from medtune.models import check_model

        print(check_model(model, getattr(cfg, "lora", None)))
    print(f"recipe ok: {recipe} (stage {stage})")
    return 0


def cmd_data(ns) -> int:
    from medtune.data import formats

    if ns.data_command == "validate":
        for path in ns.files:
            s = formats.validate_file(path, ns.format)
            langs = ", ".join(f"{k} {v}" for k, v in s["languages"].items() if v)
            print(f"{path}: ok - {s['records']} records, format {s['format']}, {s['turns']} turns, "
                  f"{s['multi_turn']} multi-turn, {s['system_prompts']} with a system prompt; languages: {langs}")
    elif ns.data_command == "convert":
        n = formats.convert_file(ns.src, ns.dst, to=ns.to, fmt=ns.format)
        print(f"wrote {n} records to {ns.dst} ({ns.to})")
    elif ns.data_command == "clean":
        from medtune.data import clean

        import dataclasses

        fields = {f.name for f in dataclasses.fields(clean.CleanSettings)}
        options = {k: v for k, v in vars(ns).items() if k in fields}
        settings = clean.CleanSettings(**options, fmt=ns.format, near_dup=not ns.no_near_dup)
        print(clean.format_summary(clean.clean_files(ns.inputs, ns.output, settings)))
    elif ns.data_command == "stats":
        from medtune.data import stats
        from medtune.models import tokenizer_for

        summary = stats.write_stats(ns.files, ns.out, tokenizer_for(ns.tokenizer), ns.max_length,
                                    tokenizer_name=ns.tokenizer, kind=ns.kind, mode=ns.mode, truncation=ns.truncation,
                                    max_prompt_length=ns.max_prompt_length, max_answer_length=ns.max_answer_length)
        print(stats.format_table(summary))
        print(f"wrote {os.path.join(ns.out, 'stats.json')} and a length histogram per file")
    elif ns.data_command == "from-benchmark":
        import json

        from medtune.eval import tasks
        from medtune.runs import atomic_write_text

        if ns.long_answer and ns.form != "prompt_completion":
            raise MedtuneError("--long-answer applies to --form prompt_completion",
                               hint="dialogues always carry the long answer after the answer line")
        items = tasks.load_task(ns.task, ns.file, setting=ns.setting)
        if ns.form == "prompt_completion":
            records = tasks.to_prompt_completion_records(ns.task, items, long_answer=ns.long_answer)
            what = "prompt-completion records in the harness's prompt format"
        else:
            records = tasks.to_sft_records(ns.task, items)
            what = "SFT dialogues"
        atomic_write_text(ns.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"wrote {len(records)} {what} ({ns.task}) to {ns.out}; train with: medtune sft RECIPE data.path={ns.out}")
    elif ns.data_command == "vocab":
        from medtune.data import vocab
        from medtune.models import load_tokenizer, resolve

        found = vocab.corpus_candidates(ns.files, load_tokenizer(resolve(ns.tokenizer)), top=ns.top,
                                        min_count=ns.min_count, mode=ns.mode)
        for word, count, pieces in found:
            print(f"{word}\t{count} times\t{pieces} tokens now")
        if ns.out:
            from medtune.runs import atomic_write_text

            atomic_write_text(ns.out, "".join(w + "\n" for w, _, _ in found))
            print(f"wrote {len(found)} words to {ns.out}; train them with: medtune pt RECIPE vocab.words={ns.out}")
    return 0


def cmd_model(ns) -> int:
    from medtune.models import import_gguf

    import_gguf(ns.gguf, ns.out_dir)
    return 0


def cmd_chat(ns) -> int:
    from medtune import chat

    settings = chat.GenerationSettings(
        temperature=ns.temperature, top_p=ns.top_p, max_new_tokens=ns.max_new_tokens,
        repetition_penalty=ns.repetition_penalty, no_repeat_ngram_size=ns.no_repeat_ngram_size,
        enable_thinking=ns.enable_thinking,
    )
    return chat.main(ns.model, settings, prompt=ns.prompt, system=ns.system, template=ns.template,
                     trust_remote_code=ns.trust_remote_code)


def cmd_serve(ns) -> int:
    from medtune.serve import app

    settings = app.ServeSettings(
        host=ns.host, port=ns.port, api_key=ns.api_key if ns.api_key is not None else os.environ.get("MEDTUNE_API_KEY"),
        max_concurrency=ns.max_concurrency, max_queue=ns.max_queue, max_input_tokens=ns.max_input_tokens,
        max_tokens=ns.max_tokens, system_prompt=ns.system_prompt, template=ns.template, timeout_s=ns.timeout,
        trust_remote_code=ns.trust_remote_code, enable_thinking=ns.enable_thinking,
    )
    from medtune.chat import load_chat_model

    return app.main(ns.model, settings, load_model=load_chat_model)


def task_files(specs: list[str] | None) -> dict[str, str]:
    """`--file TASK=PATH` (repeatable) -> {task: path}."""
    files = {}
    for spec in specs or []:
        task, sep, path = spec.partition("=")
        if not sep or not task.strip() or not path.strip():
            raise MedtuneError(f"--file {spec!r}: expected TASK=PATH", hint="e.g. --file pubmedqa=data/ori_pqal.json")
        files[task.strip()] = path.strip()
    return files


def eval_settings(ns, **given):
    """EvalSettings from the parsed eval options in `ns` (each option whose dest is a settings field; comma lists
    such as --tasks become lists), then `given`; built by config.from_dict, as a pipeline's eval step is."""
    from dataclasses import fields

    from medtune.config import from_dict
    from medtune.eval.runner import EvalSettings

    values = {f.name: getattr(ns, f.name) for f in fields(EvalSettings) if getattr(ns, f.name, None) is not None}
    values["files"] = task_files(getattr(ns, "file", None))
    return from_dict(EvalSettings, {**values, **given}, source="command line")


def cmd_eval(ns) -> int:
    from medtune.eval import runner

    if ns.compare:
        print(runner.compare(ns.compare))
        if ns.output_dir:
            from medtune.eval import report

            written = report.write_report(ns.compare, ns.output_dir, title="medtune eval: comparison")
            print(f"wrote {written['html']} and {written['md']}")
        return 0
    if not ns.model:
        raise MedtuneError("eval needs a model or run folder", hint="medtune eval runs/demo-sft --tasks mcq")
    settings = eval_settings(ns)
    for name in settings.tasks + settings.general_tasks:
        from medtune.eval import tasks

        tasks.get_task(name)
    if len(ns.model) > 1:
        runner.evaluate_models(ns.model, settings, ns.output_dir)
    else:
        runner.evaluate(ns.model[0], settings, ns.output_dir)
    return 0


def cmd_pipeline(ns) -> int:
    from medtune import pipeline

    pipeline.run(ns.recipe, from_step=ns.from_step)
    return 0


def cmd_runs(ns) -> int:
    from medtune import listing

    if not os.path.isdir(ns.dir):
        raise MedtuneError("no such folder", where=ns.dir, hint="pass the folder that holds your runs (default runs/)")
    print(listing.format_runs(listing.list_runs(ns.dir)))
    return 0


def cmd_merge(ns) -> int:
    """`medtune merge lora|average|soup`; a user error raises MedtuneError (one line, exit code 2)."""
    from medtune import merge, runs

    common = dict(overwrite=ns.overwrite, trust_remote_code=ns.trust_remote_code)
    if ns.how == "lora":
        merge.merge_lora(ns.run, ns.out, **common)
    elif ns.how == "average" and ns.sweep is not None:
        if ns.alpha is not None or ns.alpha_lower is not None or ns.alpha_upper is not None:
            raise MedtuneError("--sweep tries several alphas; leave out --alpha, --alpha-lower and --alpha-upper")
        settings = eval_settings(ns)
        merge.sweep(ns.base, ns.tuned, ns.out, ns.sweep, domain_tasks=settings.tasks,
                    general_tasks=settings.general_tasks, general_text=settings.general_text, eval_settings=settings,
                    limit=ns.limit, max_general_drop=ns.max_general_drop, max_perplexity_increase=ns.max_ppl_increase,
                    keep_models=not ns.only_chosen, shard_bytes=ns.shard_size, **common)
    elif ns.how == "average":
        if ns.general_tasks or ns.general_text:
            raise MedtuneError("--general-tasks and --general-text apply to a --sweep")
        if ns.alpha is None and (ns.alpha_lower is None or ns.alpha_upper is None):
            raise MedtuneError("average needs --alpha (or --alpha-lower and --alpha-upper), or --sweep",
                               hint="e.g. medtune merge average BASE TUNED OUT --alpha 0.5")
        merge.average(ns.base, ns.tuned, ns.out, ns.alpha, ns.alpha_lower, ns.alpha_upper, ns.split_layer,
                      shard_bytes=ns.shard_size, **common)
    elif ns.greedy:
        if ns.weights:
            raise MedtuneError("--weights and --greedy exclude each other (a greedy soup is uniform)")
        with runs.scratch_folder(ns.out) as work:
            merge.greedy_soup(ns.models, ns.out, merge.accuracy_score(eval_settings(ns), work),
                              shard_bytes=ns.shard_size, **common)
    else:
        merge.soup(ns.models, ns.out, ns.weights, shard_bytes=ns.shard_size, **common)
    return 0


def cmd_demo(ns) -> int:
    from medtune import demo

    return demo.main(output_dir=ns.output_dir, max_steps=ns.max_steps, resume=ns.resume, model=ns.model)


def build_parser() -> argparse.ArgumentParser:
    from medtune import NOT_MEDICAL_ADVICE, __version__
    from medtune.config import SEED_LIMIT, CommandParser, field_option, float_option, int_option, text_option

    count, positive, seed = int_option(0), int_option(1), int_option(0, SEED_LIMIT)  # every numeric option is checked
    share = float_option(0, 1)
    p = CommandParser(prog="medtune", description="Turn an open LLM into a medical model.",
                                epilog=NOT_MEDICAL_ADVICE)
    p.add_argument("--version", action="version", version=f"medtune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for name in STAGES:
        s = sub.add_parser(name, help=f"run the {name.upper()} stage: medtune {name} RECIPE [key=value ...]")
        s.add_argument("args", nargs=argparse.REMAINDER, help="a recipe YAML, then dotted overrides such as train.learning_rate=1e-5")
        s.set_defaults(func=cmd_stage)

    v = sub.add_parser("validate", help="check a recipe (keys, types, data files) without running it")
    v.add_argument("args", nargs="+", help="RECIPE [key=value ...]")
    v.add_argument("--stage", choices=list(STAGES), help="the stage, when the recipe has no `stage:` key")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("data", help="check, convert, clean and describe data files")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dv = dsub.add_parser("validate", help="check files against the data contract (docs/data-formats.md)")
    dv.add_argument("files", nargs="+")
    dv.add_argument("--format", default="auto", choices=["auto", "messages", "sharegpt", "alpaca"])
    dc = dsub.add_parser("convert", help="convert a dialogue file to another format")
    dc.add_argument("src")
    dc.add_argument("dst")
    dc.add_argument("--to", default="messages", choices=["messages", "sharegpt", "alpaca"])
    dc.add_argument("--format", default="auto", choices=["auto", "messages", "sharegpt", "alpaca"])
    dn = dsub.add_parser("clean", help="normalise, filter, deduplicate and optionally de-identify (docs/data-tools.md)")
    dn.add_argument("inputs", nargs="+", metavar="IN", help="text (.txt, .jsonl/.json with 'text') or dialogue files")
    dn.add_argument("-o", "--output", required=True, metavar="OUT", help="the cleaned file (.txt keeps a text layout)")
    dn.add_argument("--kind", default="auto", choices=["auto", "text", "dialogue"])
    dn.add_argument("--mode", default="line", choices=["line", "paragraph"], help=".txt: one document per line or per paragraph")
    dn.add_argument("--format", default="auto", choices=["auto", "messages", "sharegpt", "alpaca"], help="dialogue format")
    dn.add_argument("--min-chars", type=count, metavar="N", default=20, help="default 20")
    dn.add_argument("--max-chars", type=positive, metavar="N", default=100_000, help="default 100000")
    dn.add_argument("--min-useful", type=share, metavar="SHARE", default=0.8, help="least share of letters/digits/punctuation (default 0.8)")
    dn.add_argument("--max-replacement-chars", type=count, metavar="N", default=0, help="most U+FFFD characters (default 0)")
    dn.add_argument("--max-repeated-lines", type=share, metavar="SHARE", default=0.3, help="most share of repeated lines (default 0.3)")
    dn.add_argument("--max-repeated-ngrams", type=share, metavar="SHARE", default=0.4, help="most share of repeated n-grams (default 0.4)")
    dn.add_argument("--ngram", type=positive, metavar="N", default=5, help="n-gram size: words in Latin text, characters in CJK (default 5)")
    dn.add_argument("--near-dup-threshold", type=float_option(0, 1, low_open=True), metavar="J", default=0.8, help="Jaccard similarity (default 0.8)")
    dn.add_argument("--num-perm", type=int_option(1, 4096), metavar="N", default=128, help="MinHash permutations (default 128, at most 4096)")
    dn.add_argument("--no-near-dup", action="store_true", help="skip the near-duplicate step")
    dn.add_argument("--deid", action="store_true", help="replace PHI with [TYPE] placeholders (docs/deid.md)")
    dn.add_argument("--deid-types", metavar="TYPES", help="comma-separated PHI types to replace, e.g. NAME,PHONE (implies --deid)")
    dn.add_argument("--deid-mode", default="mask", choices=["mask", "surrogate"], help="[TYPE] placeholders (default) or consistent fake values")
    dn.add_argument("--deid-keep-year", action="store_true", help="dates keep their year")
    dn.add_argument("--deid-report", metavar="FILE", help="write (line, type, start, end) per identifier found, never the identifier (JSON Lines)")
    dn.add_argument("--seed", type=seed, default=0)
    ds = dsub.add_parser("stats", help="sizes, token lengths, truncation, duplicates and languages of data files")
    ds.add_argument("files", nargs="+", metavar="FILE", help="text, dialogue or preference files")
    ds.add_argument("--tokenizer", default="default", metavar="MODEL", help="default, a model/tokenizer folder, a run, a .gguf, a hub id, or none")
    ds.add_argument("--max-length", type=positive, metavar="N", default=1024, help="report the share longer than N tokens (default 1024)")
    ds.add_argument("--out", default="stats", metavar="DIR", help="folder for stats.json and the histograms (default stats/)")
    ds.add_argument("--kind", default="auto", choices=["auto", "text", "dialogue", "preference"])
    ds.add_argument("--truncation", default="keep_end", choices=["keep_end", "keep_start", "drop"], help="preference files: what rm/dpo would do with a longer pair (default keep_end)")
    ds.add_argument("--max-prompt-length", type=positive, metavar="N", help="preference files: as data.max_prompt_length (default: derived from --max-length)")
    ds.add_argument("--max-answer-length", type=positive, metavar="N", help="preference files: as data.max_answer_length (default: what the prompt leaves)")
    ds.add_argument("--mode", default="line", choices=["line", "paragraph"])
    db = dsub.add_parser("from-benchmark", help="turn a benchmark's training split into SFT dialogues")
    db.add_argument("task", help="pubmedqa, medmcqa, medqa, medqa_4options, mmlu_medical, cmmlu or mcq")
    db.add_argument("file", help="the benchmark file (or folder for mmlu_medical/cmmlu)")
    db.add_argument("out", help="output JSONL (messages, or prompt_completion with --form)")
    db.add_argument("--setting", default="reasoning_required", help="PubMedQA: reasoning_required or reasoning_free")
    db.add_argument("--form", default="messages", choices=["messages", "prompt_completion"],
                    help="chat dialogues (default), or {prompt, completion} records in the eval prompt format, "
                         "trained as plain text with the loss on the completion (docs/task-tuning.md)")
    db.add_argument("--long-answer", action="store_true",
                    help="prompt_completion: the long answer / explanation follows the answer in the completion")
    dw = dsub.add_parser("vocab", help="the frequent corpus words a tokenizer splits into several pieces (candidates for new tokens)")
    dw.add_argument("files", nargs="+", metavar="FILE", help="pretraining text (.txt / .jsonl)")
    dw.add_argument("--tokenizer", default="default", metavar="MODEL", help="default, a model folder, a run, a .gguf or a hub id")
    dw.add_argument("--top", type=positive, default=100, help="how many words (default 100)")
    dw.add_argument("--min-count", type=positive, default=5, help="a word must occur this often (default 5)")
    dw.add_argument("--mode", default="line", choices=["line", "paragraph"], help=".txt documents per line or per paragraph")
    dw.add_argument("--out", metavar="WORDS.txt", help="write the words, one per line, for vocab.words in a PT recipe")
    d.set_defaults(func=cmd_data)

    m = sub.add_parser("model", help="model utilities")
    msub = m.add_subparsers(dest="model_command", required=True)
    mi = msub.add_parser("import", help="convert a GGUF file to a safetensors checkpoint with its tokenizer")
    mi.add_argument("gguf")
    mi.add_argument("out_dir")
    m.set_defaults(func=cmd_model)

    pl = sub.add_parser("pipeline", help="run a chain of stages from one recipe; finished steps are skipped, interrupted ones resume")
    pl.add_argument("recipe")
    pl.add_argument("--from", dest="from_step", metavar="STEP", help="rerun this step and every later one from scratch")
    pl.set_defaults(func=cmd_pipeline)

    rn = sub.add_parser("runs", help="list run and evaluation folders: stage, status, base, parent, data, key metrics")
    rn.add_argument("dir", nargs="?", default="runs")
    rn.set_defaults(func=cmd_runs)

    _add_merge_parser(sub.add_parser("merge", help="merge a LoRA run, average a tuned model with its base, or make a "
                                     "soup (docs/merge.md)"), count, positive)

    c = sub.add_parser("chat", help="chat with a model or a run folder (answers are not medical advice)")
    c.add_argument("model", nargs="?", default="default", help="default, a run folder, an HF folder, a .gguf file or a hub id")
    c.add_argument("--prompt", type=text_option, help="answer this one message and exit")
    c.add_argument("--system", help="a system message")
    c.add_argument("--template", help="override the chat template (default: the run's or the tokenizer's)")
    c.add_argument("--temperature", type=float_option(0), default=0.7, help="0 = greedy (default 0.7)")
    c.add_argument("--top-p", type=float_option(0, 1, low_open=True), default=0.9, help="nucleus sampling (default 0.9)")
    c.add_argument("--max-new-tokens", type=positive, default=256, help="default 256")
    c.add_argument("--repetition-penalty", type=float_option(0, low_open=True), default=1.1, help="1.0 = off (default 1.1)")
    c.add_argument("--no-repeat-ngram-size", type=count, default=0, help="forbid repeating n-grams of this size (default 0 = off)")
    c.add_argument("--trust-remote-code", action="store_true")
    c.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="thinking templates (Qwen3): reason first, or --no-enable-thinking to answer directly "
                   "(default: the template's own)")
    c.set_defaults(func=cmd_chat)

    sv = sub.add_parser("serve", help="an OpenAI-compatible API and a web chat for a model or run, with batched "
                        "generation (docs/serve.md; answers are not medical advice)")
    sv.add_argument("model", nargs="?", default="default", help="default, a run folder, an HF folder, a .gguf file or a hub id")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need an API key)")
    sv.add_argument("--port", type=int, default=8000, help="default 8000; 0 = any free port")
    sv.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (default: $MEDTUNE_API_KEY)")
    sv.add_argument("--max-concurrency", type=positive, default=8, help="requests generated together in one batch (default 8)")
    sv.add_argument("--max-queue", type=count, default=32, help="requests that may wait for a batch slot; more get 503 (default 32)")
    sv.add_argument("--max-input-tokens", type=positive, default=2048, help="longest prompt, template included (default 2048)")
    sv.add_argument("--max-tokens", type=positive, default=512, help="default and upper limit of max_tokens (default 512)")
    sv.add_argument("--system-prompt", help="system message for requests without one (default: the run's own, if any)")
    sv.add_argument("--template", help="override the chat template (default: the run's or the tokenizer's)")
    sv.add_argument("--timeout", type=float_option(0, low_open=True), default=600, help="seconds a reply may run; then it ends as 'length' (default 600)")
    sv.add_argument("--trust-remote-code", action="store_true")
    sv.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                    help="thinking templates (Qwen3): the default for requests that do not say (a request may send "
                    "enable_thinking or chat_template_kwargs.enable_thinking)")
    sv.set_defaults(func=cmd_serve)

    from medtune.eval.runner import EvalSettings

    def settings(name: str):  # an eval option's range is its EvalSettings field's (pipelines and sweeps use it too)
        return field_option(EvalSettings, name)

    e = sub.add_parser("eval", help="benchmarks, general-text perplexity and generation health of a model or run")
    e.add_argument("model", nargs="*", help="default, a run folder, an HF folder, a .gguf file or a hub id; several: "
                   "the same items for each, results in OUTPUT_DIR/<name> (default runs/eval-<name>)")
    e.add_argument("--tasks", help="comma-separated medical tasks: pubmedqa, medmcqa, medqa, medqa_4options, mmlu_medical, cmmlu, mcq")
    e.add_argument("--general-tasks", help="comma-separated tasks reported as general ability (forgetting)")
    e.add_argument("--data-dir", help="folder holding pubmedqa/, medmcqa/, medqa/, mmlu/, cmmlu/, mcq/")
    e.add_argument("--file", action="append", metavar="TASK=PATH", help="the file of one task (repeatable)")
    e.add_argument("--setting", default="reasoning_required", help="PubMedQA: reasoning_required (default) or reasoning_free")
    e.add_argument("--shots", type=settings("shots"), default=0, help="solved examples before each question (default 0)")
    e.add_argument("--limit", type=settings("limit"), default=0, help="a seeded random sample of N items per task (0 = all)")
    e.add_argument("--seed", type=settings("seed"), default=0)
    e.add_argument("--mode", default="loglik", choices=["loglik", "generate"], help="log-likelihood of each choice (default) or chat generation + answer extraction")
    e.add_argument("--batch-size", type=settings("batch_size"), default=8)
    e.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="loglik scoring of an fp32 model: bf16 forward with every close decision re-scored in fp32, "
                   "so predictions stay fp32's (auto, the default: on a CPU with native bf16 and 100+ items; "
                   "docs/eval.md)")
    e.add_argument("--max-new-tokens", type=settings("max_new_tokens"), default=32, help="generate mode (default 32)")
    e.add_argument("--generate-batch-size", type=settings("generate_batch_size"), default=16, help="generate mode and --health: replies generated together (default 16)")
    e.add_argument("--general-text", action="append", metavar="FILE", help="perplexity on a general text file (repeatable)")
    e.add_argument("--text-mode", default="line", choices=["line", "paragraph"], help="documents per line or paragraph in .txt")
    e.add_argument("--health", action="store_true", help="generation health: repetition, self-questioning, leaks, stopping")
    e.add_argument("--prompts", help="prompt file for --health (default: the bundled medical + general set)")
    e.add_argument("--health-repetition-penalty", type=settings("health_repetition_penalty"), default=1.1,
                   help="--health generates greedily with this penalty (default 1.1, as medtune chat; 1.0 = off: the model's raw habits)")
    e.add_argument("--health-max-new-tokens", type=settings("health_max_new_tokens"), default=512, help="--health answer length cap (default 512)")
    e.add_argument("--health-langs", help="--health: only prompts in these languages, e.g. en or en,zh (default: all)")
    e.add_argument("--safety", action="store_true", help="safety prompts (emergencies, self-harm, dosing, misinformation, "
                   "privacy, certainty) scored by rule-based rubrics (docs/safety.md)")
    e.add_argument("--safety-prompts", help="prompt file for --safety (default: the bundled English and Chinese set)")
    e.add_argument("--safety-langs", help="--safety: only prompts in these languages, e.g. en or en,zh (default: all)")
    e.add_argument("--safety-max-new-tokens", type=settings("safety_max_new_tokens"), default=256, help="--safety answer length cap (default 256)")
    e.add_argument("--judge", metavar="URL", help="--safety: also ask this OpenAI-compatible endpoint (base URL, e.g. "
                   "http://127.0.0.1:8000/v1; key in MEDTUNE_JUDGE_API_KEY) to grade each answer")
    e.add_argument("--judge-model", help="the judge's model name (default: the first the endpoint lists)")
    e.add_argument("--template", help="chat template override for generate mode and --health")
    e.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="generate mode, thinking templates (Qwen3): reason before answering or not (default: the "
                   "template's own); the answer is read after the reasoning block")
    e.add_argument("--trust-remote-code", action="store_true")
    e.add_argument("--compare", nargs="+", metavar="EVAL_DIR", help="print eval folders side by side (with -o: an HTML report too)")
    e.add_argument("-o", "--output-dir", help="where results go (default runs/eval-<model name>)")
    e.set_defaults(func=cmd_eval)

    dm = sub.add_parser("demo", help="the whole chain (PT, SFT, DPO, averaging, evaluation) on the embedded default, "
                        "ending in a before/after table and an HTML report")
    dm.add_argument("--output-dir", default="runs/demo")
    dm.add_argument("--max-steps", type=positive, default=None, help="cap every training step (default: the recipe's)")
    dm.add_argument("--resume", action="store_true", help="continue an interrupted demo: skip finished steps")
    dm.add_argument("--model", default="default", help="start from this model instead of the embedded default "
                    "(a local folder, run folder or hub id)")
    dm.set_defaults(func=cmd_demo)
    return p


def _add_merge_parser(mg, count, positive) -> None:
    """`medtune merge lora|average|soup` and their options, each numeric one range-checked."""
    from medtune.config import float_option, numbers_option, size_option

    alpha = float_option(0, 1)
    mg.set_defaults(func=cmd_merge)
    sub = mg.add_subparsers(dest="how", required=True)

    def outputs(p, what: str) -> None:
        if what != "lora":
            p.add_argument("--shard-size", type=size_option, default="2GB", help="largest output shard (default 2GB)")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT (kept until the new one is complete)")
        p.add_argument("--trust-remote-code", action="store_true")

    def evaluation(p) -> None:  # dests are EvalSettings fields: `eval_settings` builds the settings from them
        p.add_argument("--tasks", default="mcq", help="comma-separated domain tasks (default mcq: the demo exam "
                       "unless --file mcq=PATH)")
        p.add_argument("--file", action="append", metavar="TASK=PATH", help="the file of one task (repeatable)")
        p.add_argument("--data-dir", help="folder holding pubmedqa/, medmcqa/, medqa/, mmlu/, cmmlu/, mcq/")
        p.add_argument("--limit", type=count, default=0, help="a seeded random sample of N items per task (0 = all)")
        p.add_argument("--batch-size", type=positive, default=8)
        p.add_argument("--text-mode", default="line", choices=["line", "paragraph"],
                       help="--general-text .txt files: one document per line (default) or per blank-line paragraph")

    lo = sub.add_parser("lora", help="merge a LoRA run (and the runs under it) into full weights")
    lo.add_argument("run", help="a medtune run folder holding a LoRA adapter")
    lo.add_argument("out", help="the new folder of full weights")
    outputs(lo, "lora")

    av = sub.add_parser("average", help="out = alpha * TUNED + (1 - alpha) * BASE, streamed tensor by tensor")
    av.add_argument("base", help="the model before tuning: a folder, a run, default or a .gguf file")
    av.add_argument("tuned", help="the tuned model: a folder or a run (LoRA runs are merged first)")
    av.add_argument("out", help="the averaged model's folder (with --sweep: the sweep folder)")
    av.add_argument("--alpha", type=alpha, help="0 = base, 1 = tuned")
    av.add_argument("--alpha-lower", type=alpha, help="alpha of the embeddings and the layers below --split-layer")
    av.add_argument("--alpha-upper", type=alpha, help="alpha of the layers from --split-layer on, final norm, LM head")
    av.add_argument("--split-layer", type=count, help="first layer of the upper part (default: half the layers)")
    av.add_argument("--sweep", type=numbers_option(0, 1), metavar="A,B,...",
                    help="evaluate these alphas (e.g. 0,0.25,0.5,0.75,1) and choose one by the stated rule")
    evaluation(av)
    av.add_argument("--general-tasks", help="sweep: comma-separated tasks scored as general ability")
    av.add_argument("--general-text", action="append", metavar="FILE", help="sweep: perplexity on general text (repeatable)")
    av.add_argument("--max-general-drop", type=float_option(0, 100), default=1.0,
                    help="sweep: most general accuracy points an alpha may lose against alpha 0 (default 1)")
    av.add_argument("--max-ppl-increase", type=float_option(0), default=0.05,
                    help="sweep: most relative general perplexity increase against alpha 0 (default 0.05 = 5%%)")
    av.add_argument("--only-chosen", action="store_true", help="sweep: keep only the chosen alpha's model folder")
    outputs(av, "average")

    so = sub.add_parser("soup", help="average several checkpoints of one architecture (a model soup)")
    so.add_argument("out", help="the soup's folder")
    so.add_argument("models", nargs="+", metavar="MODEL", help="two or more folders or runs")
    so.add_argument("--weights", type=numbers_option(0), metavar="W,W,...", help="one weight per model (normalised)")
    so.add_argument("--greedy", action="store_true",
                    help="greedy soup: add models best first while the mean accuracy on --tasks does not drop")
    evaluation(so)
    outputs(so, "soup")


def main(argv: list[str] | None = None) -> int:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # TRL's and PEFT's internals read `is_gradient_checkpointing`, which transformers 5.24 deprecated: not the
    # user's to act on (medtune's own calls are kept off deprecated names by the test suite, docs/testing.md)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        ns = build_parser().parse_args(argv)
        return ns.func(ns)
    except SystemExit as exc:  # --help, --version, or a bad option (`rm score` parses its own), printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except MedtuneError as exc:
        _error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nmedtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medtune data validate *.jsonl | head -1`: the reader left; not an error
        try:  # so the interpreter's last flush of stdout does not fail again
            stdout = sys.stdout.fileno()
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout)
        except (OSError, ValueError):
            pass
        return 141
    except OSError as exc:  # a path the user gave that the OS refuses (not a folder, no permission, disk full)
        if os.environ.get("MEDTUNE_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        _error_line(f"{where}{exc.strerror or exc} (check the paths you gave and their permissions)")
        return 2
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """A launched (torchrun/accelerate) run leaves its process group before the interpreter exits: gloo's threads
    outliving it abort the process now and then ("terminate called without an active exception")."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _error_line(text: str) -> None:
    """Print an error as the one line the user sees, even when a library's message spans several."""
    print("medtune: error: " + " ".join(part.strip() for part in text.splitlines() if part.strip()), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
