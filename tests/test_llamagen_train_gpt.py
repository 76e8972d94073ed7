"""LlamaGen GPT training on CPU with a tiny model: the loss goes down, resuming is exact, gradient accumulation
and 2-process DDP (gloo) equal the plain single-process step, class and token dropout follow upstream."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

from bench.errors import BenchError
from generators.llamagen.codes import load_checkpoint
from generators.llamagen.gpt import GPT, GPTConfig
from generators.llamagen.train_gpt import GPTTrainConfig, build_gpt, drop_labels, train_gpt, train_gpt_command

TINY = dict(dim=32, n_layer=2, n_head=2, multiple_of=16)
VOCAB, TOKENS, CLASSES = 32, 16, 4


def make_codes(path, n=16, views=2):
    """A code dataset whose sequences are a deterministic function of the label (learnable in a few steps)."""
    path.mkdir(parents=True)
    labels = np.arange(n) % CLASSES
    codes = np.zeros((n, views, TOKENS), np.uint16)
    for i in range(n):
        for v in range(views):
            codes[i, v] = (labels[i] * 5 + np.arange(TOKENS) * (1 + v)) % VOCAB
    np.save(path / "codes.npy", codes)
    np.save(path / "labels.npy", labels.astype(np.int64))
    (path / "meta.json").write_text(json.dumps({
        "num_images": n, "views": views, "tokens": TOKENS, "image_size": 64, "ten_crop": False, "crop_range": 1.0,
        "codebook_size": VOCAB, "classes": [f"c{i}" for i in range(CLASSES)]}))
    return path


@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    return make_codes(tmp_path_factory.mktemp("gpt") / "codes")


def config(codes, results, **kw):
    base = dict(code_path=str(codes), results_dir=str(results), model_overrides=TINY, global_batch_size=8,
                num_workers=0, mixed_precision="none", log_every=1, ckpt_every=1000, lr=3e-3)
    return GPTTrainConfig(**{**base, **kw})


def final_model(result):
    return load_checkpoint(os.path.join(result["checkpoint"], "model.pt"))


def read_log(results):
    return [json.loads(line) for line in open(os.path.join(results, "log.jsonl"))]


def test_training_reduces_loss_and_writes_a_loadable_checkpoint(codes, tmp_path):
    result = train_gpt(config(codes, tmp_path / "run", max_steps=16, log_every=4, lr=1e-2))
    losses = [r["loss"] for r in read_log(tmp_path / "run")]
    assert losses[0] > 3.0  # zero-initialised head: uniform over 32 codes, ln 32 = 3.47
    assert losses[-1] < 0.6 * losses[0]
    ckpt = final_model(result)
    assert ckpt["steps"] == 16
    model = GPT(GPTConfig(**ckpt["gpt_config"]))
    model.load_state_dict(ckpt["model"])  # upstream layout {"model": state_dict}: the sampler loads it as is
    assert model.config.num_classes == CLASSES and model.config.vocab_size == VOCAB
    assert not (tmp_path / "run" / ".lock").exists()  # released, and its file removed, when training finishes


def test_resume_continues_exactly(codes, tmp_path):
    # dropout, class dropout and EMA on, 2 accumulation micro-batches: every random stream must resume exactly
    kw = dict(ema=True, ema_decay=0.9, grad_accum=2, ckpt_every=3)
    straight = train_gpt(config(codes, tmp_path / "a", max_steps=6, **kw))
    train_gpt(config(codes, tmp_path / "b", max_steps=3, **kw))
    resumed = train_gpt(config(codes, tmp_path / "b", max_steps=6, resume="auto", **kw))
    assert resumed["step"] == 6
    a, b = final_model(straight), final_model(resumed)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert read_log(tmp_path / "a")[3:] == read_log(tmp_path / "b")[3:]


def test_resume_from_an_older_checkpoint_rewrites_the_log(codes, tmp_path):
    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=4, ckpt_every=2))
    with open(run / "log.jsonl", "a") as log:
        log.write('{"step": 5, "lo')  # a line torn by a crash mid-write
    train_gpt(config(codes, run, max_steps=3, ckpt_every=3, resume=str(run / "checkpoints" / "0000002")))
    assert [r["step"] for r in read_log(run)] == [1, 2, 3]
    # the abandoned branch's checkpoint is kept aside, where `--resume auto` does not find it
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000002", "0000003", "abandoned"]
    assert [p.name for p in (run / "checkpoints" / "abandoned").iterdir()] == ["0000004"]
    assert train_gpt(config(codes, run, max_steps=3, ckpt_every=3, resume="auto"))["step"] == 3


def test_a_second_run_into_a_used_folder_is_refused(codes, tmp_path):
    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=2, ckpt_every=2))
    log = (run / "log.jsonl").read_text()
    with pytest.raises(BenchError, match="already holds a run.*--resume auto"):
        train_gpt(config(codes, run, max_steps=4, seed=2))
    assert (run / "log.jsonl").read_text() == log


def test_resuming_under_other_settings_is_refused(codes, tmp_path):
    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=2, ckpt_every=2))
    with pytest.raises(BenchError, match=r"other settings:\n  lr: 0.003 -> 0.001"):
        train_gpt(config(codes, run, max_steps=4, lr=1e-3, resume="auto"))
    assert train_gpt(config(codes, run, max_steps=3, ckpt_every=1, log_every=3, resume="auto"))["step"] == 3


def test_a_non_finite_loss_stops_training_before_its_checkpoint(codes, tmp_path):
    with pytest.raises(BenchError, match=r"step \d+: the (loss is nan|weights hold NaN or inf); training stopped"):
        train_gpt(config(codes, tmp_path / "wild", max_steps=1000, ckpt_every=1, lr=1e30, max_grad_norm=0.0))
    for ckpt in (tmp_path / "wild" / "checkpoints").glob("0*"):
        weights = load_checkpoint(ckpt / "model.pt")["model"]
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_gradient_accumulation_equals_the_full_batch(codes, tmp_path):
    no_dropout = dict(class_dropout_p=0.0, token_dropout_p=0.0, dropout_p=0.0, max_steps=2)
    full = final_model(train_gpt(config(codes, tmp_path / "full", **no_dropout)))
    accum = final_model(train_gpt(config(codes, tmp_path / "accum", grad_accum=4, **no_dropout)))
    for name, tensor in full["model"].items():
        torch.testing.assert_close(accum["model"][name], tensor, rtol=1e-4, atol=1e-6)


def test_class_dropout_rate_and_null_class():
    torch.manual_seed(0)
    labels = torch.randint(0, 1000, (200_000,))
    dropped = drop_labels(labels, 0.1, null_class=1000)
    is_null = dropped == 1000
    rate = is_null.float().mean().item()
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / labels.numel()) ** 0.5  # 4 sigma of the binomial
    assert torch.equal(dropped[~is_null], labels[~is_null])
    assert torch.equal(drop_labels(labels, 0.0, 1000), labels)


def test_token_dropout_is_elementwise_embedding_dropout_including_the_class_token(codes):
    cfg = config(codes, "unused", token_dropout_p=0.25, dropout_p=0.0)
    model = build_gpt(cfg, VOCAB, TOKENS, CLASSES)
    assert model.config.token_dropout_p == 0.25 and model.config.resid_dropout_p == 0.0
    seen = {}
    model.tok_dropout.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0], out=out))
    labels, tokens = torch.tensor([1, 2]), torch.randint(0, VOCAB, (2, TOKENS))
    model.train()
    torch.manual_seed(0)
    model(labels, tokens)
    x, y = seen["inp"], seen["out"]
    assert x.shape == (2, TOKENS, 32)  # [class token, tokens[:-1]]: the class embedding is dropped out too
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)  # inverted dropout scaling
    frac = 1 - kept.float().mean().item()
    assert 0.18 < frac < 0.32
    assert (~kept[:, 0]).any()  # some class-token features are dropped
    model.eval()
    model(labels, tokens)
    assert torch.equal(seen["out"], seen["inp"])


def test_drop_path_turns_off_dropout_like_upstream(codes):
    model = build_gpt(config(codes, "unused", drop_path_rate=0.1), VOCAB, TOKENS, CLASSES)
    assert model.config.resid_dropout_p == 0.0 and model.config.ffn_dropout_p == 0.0


def test_bad_settings_are_clear_errors(codes, tmp_path):
    with pytest.raises(BenchError, match="split evenly"):
        train_gpt(config(codes, tmp_path / "x", global_batch_size=8, grad_accum=3, max_steps=1))
    with pytest.raises(BenchError, match="unknown GPT model"):
        train_gpt(config(codes, tmp_path / "x", gpt_model="GPT-Z", max_steps=1))
    with pytest.raises(BenchError, match="not a checkpoint folder"):
        train_gpt(config(codes, tmp_path / "x", resume=str(tmp_path), max_steps=1))


def test_cli_help_and_run(codes, tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(train_gpt_command, ["--help"]).output
    assert "torchrun" in help_text and "--class-dropout" in help_text and "--resume" in help_text


# ------------------------------------------------------------------------------------------------------------
# DDP with the gloo backend, 2 processes on CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfgs: list[GPTTrainConfig]) -> None:
    """One rank: run the trainings in order inside one process group (a resume needs no fresh processes)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        for cfg in cfgs:
            train_gpt(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


NO_DROPOUT = dict(class_dropout_p=0.0, token_dropout_p=0.0, dropout_p=0.0)


@pytest.fixture(scope="module")
def single_run(codes, tmp_path_factory):
    results = tmp_path_factory.mktemp("gpt") / "single"
    return final_model(train_gpt(config(codes, results, max_steps=3, **NO_DROPOUT))), read_log(results)


def _assert_same_model(got, expected):
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=1e-4, atol=1e-6)


def test_ddp_and_fsdp_two_processes_equal_single_process(codes, single_run, tmp_path):
    fsdp = dict(parallel="fsdp", **NO_DROPOUT)
    runs = [config(codes, tmp_path / "ddp", max_steps=3, **NO_DROPOUT),
            config(codes, tmp_path / "fsdp", max_steps=2, **fsdp),
            config(codes, tmp_path / "fsdp", max_steps=3, resume="auto", **fsdp)]  # FSDP resume, sharded optimizer
    mp.spawn(_ddp_worker, args=(2, _free_port(), runs), nprocs=2)

    ddp_dir = tmp_path / "ddp" / "checkpoints" / "0000003"
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["model.pt", "rank0.pt", "rank1.pt"]
    _assert_same_model(load_checkpoint(ddp_dir / "model.pt"), single_run[0])
    assert [r["loss"] for r in read_log(tmp_path / "ddp")] == pytest.approx([r["loss"] for r in single_run[1]],
                                                                             rel=1e-5)
    # the FSDP checkpoint is unsharded: the same layout as DDP and single-process runs
    assert read_log(tmp_path / "fsdp")[2]["step"] == 3  # the second FSDP run resumed at step 2
    _assert_same_model(load_checkpoint(tmp_path / "fsdp" / "checkpoints" / "0000003" / "model.pt"), single_run[0])


@pytest.mark.parametrize("damage,message", [
    ("code_too_big", r"codes.npy: values span \[0, 9999\], outside \[0, 32\)"),
    ("label_is_null", r"labels.npy: values span \[0, 4\], outside \[0, 4\)"),
    ("float_codes", "holds float32 values"),
    ("torn_meta", "not a readable code dataset"),
    ("no_labels", "not a readable code dataset"),
])
def test_a_malformed_code_dataset_is_refused_before_training(tmp_path, damage, message):
    from generators.llamagen.codes import CodeDataset

    path = make_codes(tmp_path / "codes")
    if damage == "code_too_big":
        codes = np.load(path / "codes.npy")
        codes[3, 1, 7] = 9999
        np.save(path / "codes.npy", codes)
    elif damage == "label_is_null":
        np.save(path / "labels.npy", np.full(16, CLASSES, np.int64) - np.arange(16) % 2)
    elif damage == "float_codes":
        np.save(path / "codes.npy", np.load(path / "codes.npy").astype(np.float32))
    elif damage == "torn_meta":
        (path / "meta.json").write_text('{"num_images": 16, "vie')
    else:
        (path / "labels.npy").unlink()
    with pytest.raises(BenchError, match=message):
        CodeDataset(path)


@pytest.mark.parametrize("option", ["--ckpt-every", "--log-every", "--global-batch-size", "--grad-accum"])
def test_zero_counts_are_usage_errors(codes, tmp_path, option):
    out = CliRunner().invoke(train_gpt_command, [str(codes), "-o", str(tmp_path / "r"), option, "0"])
    assert out.exit_code == 2 and option in out.output and "Traceback" not in out.output
    assert not (tmp_path / "r").exists()


def test_resuming_with_another_process_count_is_refused(codes, tmp_path):
    import shutil

    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=2, ckpt_every=2))
    ckpt = run / "checkpoints" / "0000002"
    shutil.copy(ckpt / "rank0.pt", ckpt / "rank1.pt")  # as if two processes had written it
    with pytest.raises(BenchError, match=r"written by 2 process\(es\), this run has 1"):
        train_gpt(config(codes, run, max_steps=4, resume="auto"))


# ------------------------------------------------------------------------------------------------------------
# Reliability: locked folders, runs that train nothing, what checkpoints record, pruning, export


def _contents(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_folder_another_training_uses_is_refused_and_left_alone(codes, tmp_path, held_lock):
    run = tmp_path / "run"
    with held_lock(run):  # the first run has not checkpointed yet: only its lock says it is there
        with pytest.raises(BenchError, match=r"run is in use by another training run; wait for it to finish, or "
                                             r"train into another folder \(-o\)"):
            train_gpt(config(codes, run, max_steps=2, lr=1e-3))
        assert _contents(run) == [".lock"]  # no log, no checkpoint
    assert train_gpt(config(codes, run, max_steps=2))["step"] == 2  # free once the other run has ended


def test_a_run_that_would_train_nothing_is_refused(codes, tmp_path):
    out = CliRunner().invoke(train_gpt_command, [str(codes), "-o", str(tmp_path / "r"), "--epochs", "0",
                                                 "--global-batch-size", "8", "--num-workers", "0"])
    assert out.exit_code == 2 and "--epochs 0 with no --max-steps trains nothing" in out.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(BenchError, match="--epochs 0 with no --max-steps"):
        train_gpt(config(codes, tmp_path / "r", epochs=0))
    assert not (tmp_path / "r").exists()


def test_checkpoints_record_the_codes_they_trained_on(codes, tmp_path):
    import hashlib
    import shutil

    data = tmp_path / "codes"
    shutil.copytree(codes, data)
    run = tmp_path / "run"
    result = train_gpt(config(data, run, max_steps=2, ckpt_every=2))
    recorded = final_model(result)["codes"]
    assert recorded == {"path": str(data.resolve()),
                        "meta_sha256": hashlib.sha256((data / "meta.json").read_bytes()).hexdigest()}
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "codes_sha256": "0" * 64}))  # as if extracted again
    with pytest.raises(BenchError, match="trained on another code dataset"):
        train_gpt(config(data, run, max_steps=4, resume="auto"))


def test_keep_last_prunes_older_checkpoints_but_not_abandoned_ones(codes, tmp_path):
    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=4, ckpt_every=1, keep_last=2))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000003", "0000004"]

    kept = tmp_path / "kept"
    train_gpt(config(codes, kept, max_steps=4, ckpt_every=2))  # checkpoints 2 and 4
    # back to step 2 keeping 1: step 4 goes to abandoned/ (untouched), step 2 stays until step 3 exists
    result = train_gpt(config(codes, kept, max_steps=3, ckpt_every=3, keep_last=1,
                              resume=str(kept / "checkpoints" / "0000002")))
    assert result["step"] == 3
    assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["0000003", "abandoned"]
    assert [p.name for p in (kept / "checkpoints" / "abandoned").iterdir()] == ["0000004"]
    out = CliRunner().invoke(train_gpt_command, [str(codes), "-o", str(tmp_path / "r"), "--keep-last", "0"])
    assert out.exit_code == 2 and "--keep-last" in out.output


def test_a_checkpoint_from_before_a_new_setting_still_resumes(codes, tmp_path):
    """A train config saved before `keep_last` existed lacks the field: it counts as its default."""
    run = tmp_path / "run"
    train_gpt(config(codes, run, max_steps=2, ckpt_every=2))
    path = run / "checkpoints" / "0000002" / "model.pt"
    saved = torch.load(path, weights_only=True)
    del saved["train_config"]["keep_last"], saved["codes"]
    torch.save(saved, path)
    assert train_gpt(config(codes, run, max_steps=3, resume="auto"))["step"] == 3


def test_help_says_how_to_sample_and_export_is_a_bench_command(codes, tmp_path):
    from bench.cli import cli
    from generators.llamagen.checkpoints import load_gpt

    text = CliRunner().invoke(train_gpt_command, ["--help"], terminal_width=200).output
    assert "bench run -g llamagen-b-256 --ckpt runs/gpt-b/checkpoints/<step>/model.pt" in text
    assert "bench llamagen export runs/gpt-b/checkpoints/<step>/model.pt gpt-b.safetensors" in text
    assert "--keep-last" in text
    ckpt = train_gpt(config(codes, tmp_path / "run", max_steps=1))["checkpoint"]
    out = CliRunner().invoke(cli, ["llamagen", "export", os.path.join(ckpt, "model.pt"), str(tmp_path / "g.st")])
    assert out.exit_code == 0, out.output
    assert load_gpt(tmp_path / "g.st").config.num_classes == CLASSES
