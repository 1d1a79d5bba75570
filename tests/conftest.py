"""Shared fixtures: a tiny random TransformerBridge on the toy vocabulary, the committed
toy model (skipped while its checkpoint is absent), a GPT-2-style byte-level BPE tokenizer
built from the toy corpus (tests/bpe.py: the Hugging Face loading tests run on any clone),
the real GPT-2 tokenizer for the few tests that check GPT-2's own token pieces (skipped,
saying so, where ../shared/data/gpt2-tokenizer is absent, as on a user's clone) and small
helpers to write dataset files and run the CLI."""

from __future__ import annotations

import csv
import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The models here are tiny: one intra-op thread is as fast as several, and does not
# collapse (10x slower) when other processes compete for the machine's few cores. The
# command-line tests' subprocesses inherit it too (pytest runs on two workers: with more
# threads than cores, OpenMP's spinning threads burn the other worker's time).
# INTERVENTIONS_TEST_THREADS and INTERVENTIONS_TEST_DETERMINISTIC=1 rerun the suite as another machine
# would (2 threads, or torch.use_deterministic_algorithms): every statistical assertion keeps
# its margin under each (the margins are stated where they are asserted).
THREADS = int(os.environ.get("INTERVENTIONS_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
if os.environ.get("INTERVENTIONS_TEST_DETERMINISTIC") == "1":
    torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is used from the checkout, not installed
    sys.path.insert(0, str(ROOT))

GPT2_TOKENIZER_DIR = ROOT.parent / "shared" / "data" / "gpt2-tokenizer"

TINY_CONFIG = dict(
    d_model=32,
    n_layers=2,
    n_heads=4,
    d_head=8,
    d_mlp=64,
    n_ctx=64,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
)


def toy_checkpoint_weights() -> Path:
    """Where load_model("toy") looks for the committed weights (read at call time)."""
    import interventions.models as models

    return Path(models.TOY_CHECKPOINT) / "model.safetensors"


def skip_without_toy_checkpoint() -> None:
    weights = toy_checkpoint_weights()
    if not weights.exists():
        pytest.skip(
            f"toy checkpoint {weights} is absent (train it with "
            "`python -m interventions toyworld train --out DIR`)"
        )


def build_tiny_model(tokenizer, seed: int = 0):
    """A tiny randomly initialised native TransformerBridge, frozen."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens.model_bridge import TransformerBridge

    from interventions.models import freeze

    config = dict(TINY_CONFIG, d_vocab=len(tokenizer), seed=seed)
    return freeze(TransformerBridge.boot_native(config, tokenizer=tokenizer))


@pytest.fixture(scope="session")
def toy_tokenizer(tmp_path_factory):
    """The toy world's word-level tokenizer, saved and reloaded from a folder
    (boot_native re-loads a tokenizer by its name_or_path)."""
    from interventions.toyworld import corpus
    from interventions.toyworld.tokenizer import build_tokenizer, load_tokenizer

    folder = tmp_path_factory.mktemp("toy_tokenizer")
    build_tokenizer(corpus.all_words()).save_pretrained(str(folder))
    return load_tokenizer(folder)


@pytest.fixture(scope="session")
def tiny_model(toy_tokenizer):
    """2 layers, 4 heads, d_model 32, random weights (seed 0), toy vocabulary, frozen."""
    return build_tiny_model(toy_tokenizer, seed=0)


@pytest.fixture(scope="session")
def toy_model():
    """(model, tokenizer) = load_model("toy"); skips while the checkpoint is absent."""
    skip_without_toy_checkpoint()
    from interventions.models import load_model

    return load_model("toy")


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory):
    """A GPT-2-style byte-level BPE tokenizer trained on the toy corpus (tests/bpe.py), saved
    and reloaded from a folder as a model folder's tokenizer is."""
    from bpe import save_bpe_tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(save_bpe_tokenizer(tmp_path_factory.mktemp("bpe_tokenizer"))))


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The real GPT-2 tokenizer from ../shared/data/gpt2-tokenizer (offline), for the tests that
    check GPT-2's own token pieces; every other BPE test uses `bpe_tokenizer`."""
    if not (GPT2_TOKENIZER_DIR / "vocab.json").exists():
        pytest.skip(f"needs GPT-2's real vocabulary, which is not part of a clone ({GPT2_TOKENIZER_DIR} is absent); "
                    "the same checks run on the project's own BPE tokenizer (tests/bpe.py)")  # fmt: skip
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(GPT2_TOKENIZER_DIR))


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path: Path, records, header=("prompt", "correct", "wrong")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            writer.writerow([r[k] for k in ("prompt", "correct", "wrong")])
    return path


def toy_records(count: int, prefix: str = "Tell me about item"):
    """`count` distinct records whose answers are single tokens of the toy tokenizer."""
    return [
        {"prompt": f"{prefix} {i} : it is", "correct": " Paris", "wrong": " Berlin"}
        for i in range(count)
    ]


def hub_offline(monkeypatch) -> None:
    """No Hugging Face hub requests. huggingface_hub reads HF_HUB_OFFLINE once at import,
    so the already-imported constant is patched too (else a lookup retries for ~20 s)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def fake_hub_cache(monkeypatch, folder: Path, *names: str) -> None:
    """A local Hugging Face cache (HF_HOME=`folder`) that holds a snapshot of each hub model in
    `names`, so that the checks before a model loads take them as downloaded (interventions.hub)."""
    monkeypatch.setenv("HF_HOME", str(folder))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in names:
        snapshot = folder / "hub" / f"models--{name.replace('/', '--')}" / "snapshots" / "0"
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "config.json").write_text("{}")


def save_tiny_gpt2(folder: Path, tokenizer, seed: int, n_layer: int = 2, n_embd: int = 32):
    """A randomly initialised GPT-2-shaped model and `tokenizer`, saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    vocab = len(tokenizer) if tokenizer is not None else 50257
    config = GPT2Config(n_layer=n_layer, n_head=2, n_embd=n_embd, vocab_size=vocab, n_positions=64)
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return hf


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, bpe_tokenizer):
    """(bridge, hf_model): a random GPT-2-shaped model with a byte-level BPE tokenizer, loaded
    offline with load_model."""
    from interventions.models import load_model

    folder = tmp_path_factory.mktemp("tiny_gpt2")
    hf = save_tiny_gpt2(folder, bpe_tokenizer, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        model, _ = load_model(str(folder))
    return model, hf


@pytest.fixture(scope="module")
def model_args(tmp_path_factory, toy_tokenizer) -> list[str]:
    """CLI overrides: [] for the committed toy model, else model.name=<a tiny native checkpoint>."""
    if toy_checkpoint_weights().exists():
        return []
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    toy_tokenizer.save_pretrained(str(folder))
    model = build_tiny_model(toy_tokenizer, seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dict(TINY_CONFIG, d_vocab=len(toy_tokenizer))))
    return [f"model.name={folder}"]


class WarmInterpreter:
    """One interpreter per test worker that runs `python <script> <args>` commands in itself
    (tests/pages.py's runner): a fresh interpreter spends 5-7 s importing torch, Lightning and
    TransformerLens before a tiny run's one second of work. Each command gets the caller's
    environment, the checkout as working directory, a fresh process's torch threads and its
    own sys.argv; Hydra's global state and the root logger's handlers are reset after it."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pages.py")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)  # fmt: skip

    def run(self, argv: list[str], env: dict[str, str], timeout: float):
        """subprocess.run's CompletedProcess for `python <argv>`; TimeoutExpired (and this
        interpreter killed) past `timeout` seconds."""
        command = [sys.executable, *argv]  # what the CompletedProcess says was run
        self.proc.stdin.write(json.dumps({"kind": "argv", "argv": argv, "env": env, "cwd": str(ROOT)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise subprocess.TimeoutExpired(command, timeout)
        line = self.proc.stdout.readline()
        if not line:  # the interpreter died inside the command (os._exit, a crash)
            code = self.proc.wait()
            return subprocess.CompletedProcess(command, code, "", "the warm interpreter died")
        done = json.loads(line)
        return subprocess.CompletedProcess(command, done["code"], done["out"], done["err"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


# this worker's warm interpreters, by the PYTHONPATH they started with: a method imported from
# a plugin's folder registers itself for the rest of its interpreter's life
_WARM: dict[str, WarmInterpreter] = {}


@pytest.fixture(scope="session", autouse=True)
def _close_warm_interpreters():
    yield
    for warm in _WARM.values():
        if warm.alive():
            warm.close()


def run_cli(script: str, *args: str, hydra_dir: Path | None = None, timeout: int = 600, threads: int | None = None,
            fresh: bool = False, pythonpath: str | None = None):  # fmt: skip
    """Run `python <script> <args>` in the checkout (W&B off): in this worker's warm
    interpreter (`WarmInterpreter`; one of its own for each `pythonpath` given), or with
    `fresh` in a new process, for what one process must not share with the next (signals,
    DDP's process group, warnings shown once per process, environment read at import)."""
    argv = [script, *args]
    if hydra_dir is not None:  # keep Hydra's own folder out of the checkout
        argv.append(f"hydra.run.dir={hydra_dir}")
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (pythonpath, os.environ.get("PYTHONPATH"))))
    if fresh:
        return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=env)  # fmt: skip
    key = env.get("PYTHONPATH", "")
    if key not in _WARM or not _WARM[key].alive():
        _WARM[key] = WarmInterpreter(env)
    return _WARM[key].run(argv, env, timeout)


def rebuild_sweep_summary(sweep: Path, record: str, written: tuple[str, ...], eval_dir: Path) -> tuple[dict, dict]:
    """Delete a sweep's summary files (`written`), rebuild them with `evaluate.py sweep=`, and
    return its JSON `record` as it was before and as rebuilt."""
    before = json.loads((sweep / record).read_text())
    for name in written:
        (sweep / name).unlink()
    rebuilt = run_cli("evaluate.py", f"sweep={sweep}", "logger=none", f"hydra.run.dir={eval_dir}", threads=1)
    assert rebuilt.returncode == 0, describe(rebuilt)
    return before, json.loads((sweep / record).read_text())


def describe(result) -> str:
    """A failed CLI run's return code and output tails, for assertion messages."""
    return f"rc={result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="session")
def hf_gpt2(tmp_path_factory, toy_tokenizer):
    """A random 3-layer Hugging Face GPT-2 (with the toy tokenizer) through TransformerBridge."""
    from interventions.models import load_model

    folder = tmp_path_factory.mktemp("prefix_gpt2")
    save_tiny_gpt2(folder, toy_tokenizer, seed=1, n_layer=3)
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        return load_model(str(folder))[0]


@pytest.fixture(params=["native", "hf_gpt2"])
def block_model(request, tiny_model):
    """Each architecture whose blocks the prefix skip and `skip_unread` cut into."""
    return tiny_model if request.param == "native" else request.getfixturevalue("hf_gpt2")


def _tiny_hf_bridge(tmp_path_factory, tokenizer, kind: str):
    """A random 3-layer Hugging Face model of `kind` ("neox": Pythia's parallel-attention
    GPT-NeoX, "llama": RMSNorm + gated MLP) with the toy tokenizer, through TransformerBridge."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from interventions.models import load_model

    sizes = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                 vocab_size=len(tokenizer), max_position_embeddings=64)  # fmt: skip
    if kind == "neox":
        config, cls = GPTNeoXConfig(**sizes), GPTNeoXForCausalLM
    else:
        config, cls = LlamaConfig(num_key_value_heads=2, **sizes), LlamaForCausalLM
    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp(f"tiny_{kind}")
    cls(config).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        return load_model(str(folder))[0]


@pytest.fixture(scope="session")
def hf_neox(tmp_path_factory, toy_tokenizer):
    return _tiny_hf_bridge(tmp_path_factory, toy_tokenizer, "neox")


@pytest.fixture(scope="session")
def hf_llama(tmp_path_factory, toy_tokenizer):
    return _tiny_hf_bridge(tmp_path_factory, toy_tokenizer, "llama")


@pytest.fixture(params=["native", "hf_gpt2", "hf_neox", "hf_llama"])
def unread_model(request, tiny_model):
    """Each architecture `skip_unread` cuts into (forward.SKIP_UNREAD_ADAPTERS)."""
    return tiny_model if request.param == "native" else request.getfixturevalue(request.param)


@pytest.fixture
def fake_sinfo(tmp_path, monkeypatch):
    """A `sinfo` on PATH describing one 2-CPU, 1000 MB node in partition debug (the default)
    and one 8-CPU node with two GPUs in partition gpu; an `sbatch` beside it (never called)."""
    script = tmp_path / "sinfo"
    script.write_text("#!/bin/sh\necho 'n1|2|1000|(null)|debug*'\necho 'n2|8|64000|gpu:2|gpu'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


# The longest modules first, longest first (the workers' seconds per module, measured with
# --durations=0 on 2026-12-07: 127, 71, 60, 60, 50, 38, 36, 36, 35, 23, 19, 17, 15, 13 s).
# pytest-xdist (--dist loadfile) hands whole modules to its two workers in this order
# (pyproject's addopts turn its own reordering off, which sorts by number of tests and so
# put long modules of few tests, such as the docs' one-test modules, last, where one worker
# ran them while the other sat idle); then the others, most tests first.
FIRST = ("test_docs_commands_sweeps.py", "test_docs_commands_analyses.py", "test_slurm.py",
         "test_docs_commands_circuits.py", "test_docs_commands_guides.py", "test_benchmarks.py", "test_reliability.py",
         "test_sweep.py", "test_adaptive_sweeper.py", "test_circuits.py", "test_plugins.py", "test_tutorial.py",
         "test_architecture.py", "test_ddp.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def rank(item):
        name = item.path.name
        return (FIRST.index(name), 0) if name in FIRST else (len(FIRST), -counts[name])

    items.sort(key=rank)  # stable: each module's tests keep their order
