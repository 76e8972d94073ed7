"""Loading LlamaGen checkpoints: every official container, wrapper prefixes, strict errors, real sizes."""

import argparse

import os

import pytest
import torch

from bench.errors import BenchError
from generators.llamagen import load_gpt, load_vq
from generators.llamagen.checkpoints import load_strict, read_state_dict
from generators.llamagen.gpt import GPT, GPTConfig
from generators.llamagen.vq import VQModel, vq_config


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(dim=64, n_layer=2, n_head=4, block_size=16, vocab_size=40, num_classes=10,
                          multiple_of=32))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def fresh_tiny_gpt() -> GPT:
    return GPT(GPTConfig(dim=64, n_layer=2, n_head=4, block_size=16, vocab_size=40, num_classes=10,
                         multiple_of=32)).eval()


CONTAINERS = {
    "ddp": lambda sd: {"model": sd, "optimizer": {"state": {}}, "steps": 1000,
                       "args": argparse.Namespace(gpt_model="GPT-B", lr=1e-4)},
    "deepspeed": lambda sd: {"module": sd},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "fsdp_bare": lambda sd: dict(sd),
    "compiled": lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    "ddp_wrapped": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "legacy_freqs_cis": lambda sd: {"model": {**sd, "freqs_cis": torch.zeros(17, 8, 2)}},
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_every_container_loads_the_same_weights(tmp_path, container):
    src = tiny_gpt()
    path = tmp_path / "ckpt.pt"
    torch.save(CONTAINERS[container](src.state_dict()), path)
    dst = fresh_tiny_gpt()
    load_strict(dst, read_state_dict(path), "tiny GPT")
    for (k, a), (k2, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    labels, tokens = torch.tensor([1, 2]), torch.randint(0, 40, (2, 16))
    assert torch.equal(src.teacher_forced_logits(labels, tokens), dst.teacher_forced_logits(labels, tokens))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": tiny_gpt().state_dict(), "extra": _Foreign()}, path)
    with pytest.raises(BenchError, match=r"refused for safety.*blocked global: .*_Foreign") as refused:
        read_state_dict(path)
    assert "weights_only=False" not in str(refused.value)  # never advise running the pickle


class _Foreign:
    pass


class _CallsAFunction:
    """A pickle that calls a function when loaded (here a harmless one): what a malicious checkpoint does."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_that_calls_a_function_is_refused_for_safety_whatever_the_torch_wording(tmp_path, monkeypatch):
    """torch 2.13 words this "unsupported GLOBAL posix.getcwd whose module posix is blocked" (earlier: "was not an
    allowed global"); it used to be reported as "not a torch.save file, or a corrupt one"."""
    import pickle

    import bench.checkpoint

    path = tmp_path / "calls.pt"
    torch.save({"model": tiny_gpt().state_dict(), "x": _CallsAFunction()}, path)
    with pytest.raises(BenchError, match=r"refused for safety.*blocked global: (posix|os)\.getcwd"):
        read_state_dict(path)
    for wording in ("Weights only load failed. Unsupported global: GLOBAL a.b was not an allowed global by default.",
                    "Weights only load failed. Trying to load unsupported GLOBAL a.b whose module a is blocked."):
        def fails(*args, **kwargs):
            raise pickle.UnpicklingError(wording)

        monkeypatch.setattr(bench.checkpoint.torch, "load", fails)
        with pytest.raises(BenchError, match="refused for safety"):
            read_state_dict(path)
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02garbage")
    monkeypatch.undo()
    with pytest.raises(BenchError, match="cannot be read") as corrupt:
        read_state_dict(tmp_path / "garbage.pt")
    assert "safety" not in str(corrupt.value)


def test_non_dict_and_missing_file_and_no_state_dict(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(BenchError, match="no state dict found.*found Tensor"):
        read_state_dict(tmp_path / "tensor.pt")
    torch.save({"weights": {"a": torch.zeros(1)}, "steps": 3}, tmp_path / "other.pt")
    with pytest.raises(BenchError, match=r"no state dict found.*keys \['steps', 'weights'\]"):
        read_state_dict(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(BenchError, match="cannot be read"):
        read_state_dict(tmp_path / "text.pt")


def test_mis_sized_checkpoint_names_expected_and_found_shapes():
    sd = tiny_gpt().state_dict()
    sd["layers.1.feed_forward.w1.weight"] = torch.zeros(96, 64)  # hidden: int(2 * 256 / 3) = 170 -> 192
    sd["output.weight"] = torch.zeros(41, 64)
    with pytest.raises(BenchError) as err:
        load_strict(fresh_tiny_gpt(), sd, "tiny GPT")
    msg = str(err.value)
    assert "shape mismatches" in msg and "(2 in all)" in msg
    assert "layers.1.feed_forward.w1.weight: expected (192, 64), found (96, 64)" in msg
    assert "output.weight: expected (40, 64), found (41, 64)" in msg


def test_foreign_checkpoint_lists_missing_and_unexpected_keys():
    torch.manual_seed(0)
    vq_sd = VQModel(vq_config("VQ-16", ch=32, z_channels=32, codebook_size=64)).state_dict()
    with pytest.raises(BenchError) as err:
        load_strict(fresh_tiny_gpt(), vq_sd, "tiny GPT")
    msg = str(err.value)
    n_expected = len(fresh_tiny_gpt().state_dict())
    assert f"{n_expected} tensors expected, {len(vq_sd)} found" in msg
    assert "missing keys: [cls_embedding.embedding_table.weight" in msg and f"({n_expected} in all)" in msg
    assert "unexpected keys: [encoder.conv_in.weight" in msg and f"({len(vq_sd)} in all)" in msg


def test_gpt_layer_count_mismatch_is_reported():
    src = GPT(GPTConfig(dim=64, n_layer=3, n_head=4, block_size=16, vocab_size=40, num_classes=10,
                        multiple_of=32))
    with pytest.raises(BenchError, match=r"unexpected keys: \[layers\.2\.attention\.wqkv\.weight"):
        load_strict(fresh_tiny_gpt(), src.state_dict(), "tiny GPT")


# ---- official sizes, end to end -------------------------------------------------------------------------

def test_load_gpt_b_official_size_bare_fsdp_file(tmp_path):
    """A GPT-B state dict built independently of GPT (shapes written out by hand), in fp16 to keep it small."""
    torch.manual_seed(0)
    dim, hidden, vocab = 768, 2048, 16384
    sd = {"cls_embedding.embedding_table.weight": torch.randn(1001, dim),
          "tok_embeddings.weight": torch.randn(vocab, dim),
          "norm.weight": torch.ones(dim), "output.weight": torch.randn(vocab, dim) * 0.01}
    for i in range(12):
        sd.update({f"layers.{i}.attention.wqkv.weight": torch.randn(3 * dim, dim) * 0.02,
                   f"layers.{i}.attention.wo.weight": torch.randn(dim, dim) * 0.02,
                   f"layers.{i}.feed_forward.w1.weight": torch.randn(hidden, dim) * 0.02,
                   f"layers.{i}.feed_forward.w2.weight": torch.randn(dim, hidden) * 0.02,
                   f"layers.{i}.feed_forward.w3.weight": torch.randn(hidden, dim) * 0.02,
                   f"layers.{i}.attention_norm.weight": torch.ones(dim),
                   f"layers.{i}.ffn_norm.weight": torch.ones(dim)})
    sd = {k: v.half() for k, v in sd.items()}
    path = tmp_path / "c2i_B_384.pt"
    torch.save(sd, path)
    gpt = load_gpt(path, "GPT-B", image_size=384, downsample=16)
    assert not gpt.training and gpt.config.block_size == 576 and gpt.rope.shape == (577, 32, 2)
    assert torch.equal(gpt.layers[7].feed_forward.w2.weight, sd["layers.7.feed_forward.w2.weight"].float())
    logits = gpt.teacher_forced_logits(torch.tensor([5]), torch.randint(0, vocab, (1, 4)))
    assert logits.shape == (1, 4, vocab)
    with pytest.raises(BenchError, match="shape mismatches"):
        load_gpt(path, "GPT-L", image_size=384)
    bf16 = load_gpt(path, "GPT-B", image_size=256, dtype=torch.bfloat16)
    assert bf16.output.weight.dtype == torch.bfloat16 and bf16.config.block_size == 256


def test_load_vq16_official_size_ddp_file(tmp_path):
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VQModel(vq_config("VQ-16")).state_dict().items()}
    sd = {k: (torch.randn(s) * 0.02).half() for k, s in shapes.items()}
    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": sd, "steps": 1, "args": argparse.Namespace(vq_model="VQ-16")}, path)
    vq = load_vq(path, "VQ-16")
    assert torch.equal(vq.quantize.embedding.weight, sd["quantize.embedding.weight"].float())
    codes = vq.encode_to_codes(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert codes.shape == (1, 2, 2)
    # without the training-only usage buffer it still loads
    del sd["quantize.codebook_used"]
    torch.save({"model": sd}, path)
    assert torch.equal(load_vq(path, "VQ-16").quantize.codebook_used, torch.zeros(65536))
    with pytest.raises(BenchError, match="shape mismatches"):
        load_vq(path, "VQ-8")


def test_gpt_checkpoint_given_as_tokenizer_is_refused(tmp_path):
    path = tmp_path / "gpt.pt"
    torch.save({"model": tiny_gpt().state_dict()}, path)
    with pytest.raises(BenchError, match="does not fit LlamaGen VQ-16"):
        load_vq(path)
    with pytest.raises(BenchError, match="unknown GPT model"):
        load_gpt(path, "GPT-Z")


def test_a_file_that_is_not_a_checkpoint_gets_no_unsafe_advice(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(BenchError, match="not a torch.save file") as refused:
        read_state_dict(tmp_path / "text.pt")
    assert "weights_only" not in str(refused.value)
