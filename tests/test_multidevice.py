"""Data parallel training on several devices: four CPU devices in one subprocess
(XLA_FLAGS=--xla_force_host_platform_device_count=4), which checks at once that

* the same char-LM training on 1 and on 4 devices gives the same loss and
  gradient-norm curves within float32 reduction-order rounding;
* a batch that does not divide by the device count is refused, naming both;
* a 4-device run resumed from a checkpoint reproduces its curve exactly, its
  carries restored split along the batch and its params replicated;

then that two processes of two devices each (`jax.distributed.initialize` on
localhost) train the same run as one process of four devices.

Tolerance: relative 2e-6 (about 17 float32 ulps). On 4 devices each device
sums a quarter of the batch and the all-reduce adds the 4 partial sums, so the
mean loss and each gradient are rounded in another order than one device's
single sum: a few ulps per reduction (measured: 2.5e-7 relative after 8 Adam
steps of this model). A handful of steps carries that forward without
amplifying it; a wrong sharding (a batch axis mixed up, a carry reset, a
gradient not reduced) changes the curves by percents.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import json, shutil, sys
from pathlib import Path

import jax
import numpy as np

from rnnjax.apps import charlm, checkpoint, training
from rnnjax.apps.data import Corpus

rng = np.random.default_rng(0)
words = ["for i in x:\\n", "    y += i\\n", "print(y)\\n"]
text = "".join(words[i] for i in rng.integers(0, 3, 400))
corpus = Corpus(text[:3000], text[3000:], "words")
model = charlm.ModelConfig(hidden=8, embed=4, dropout=0.1)  # dropout: masks from the key
cfg = charlm.TrainConfig(batch=8, seq_len=8, lr=1e-2, minutes=0, max_steps=6, log_every=1)

def train(devices, out_dir=None, resume=False):
  every = 3 if out_dir else 0
  return charlm.train_char_lm(
    corpus, model, cfg._replace(devices=devices, checkpoint_every=every),
    out_dir=out_dir, resume=resume, progress=False,
  )

def curve(history, key):
  return np.array([row[key] for row in history])
"""

FOUR_DEVICES = (
  PRELUDE
  + """
assert jax.device_count() == 4, jax.devices()
out = Path(sys.argv[1])
"""
  + """
one = train(1)
four = train(4, out_dir=out)
assert (one.devices, four.devices) == (1, 4)
assert [r["devices"] for r in four.history] == [4] * 6
for key in ("loss", "grad_norm"):
  np.testing.assert_allclose(curve(four.history, key), curve(one.history, key), rtol=2e-6)
print("1 vs 4 devices, largest relative loss difference:",
      np.max(np.abs(curve(four.history, "loss") / curve(one.history, "loss") - 1)))

try:
  charlm.train_char_lm(corpus, model, cfg._replace(batch=6, devices=4), progress=False)
  raise AssertionError("a batch of 6 on 4 devices was accepted")
except ValueError as e:
  assert str(e) == (
    "batch 6 does not divide by 4 devices: each device takes an equal share of the "
    "batch; use --batch 8 (a multiple of 4) or --devices 3"
  ), e

# a kill after step 3's checkpoint: step 6's is gone, the metrics stop at 3
shutil.rmtree(out / "checkpoints" / "6")
rows = (out / "metrics.jsonl").read_text().splitlines()
(out / "metrics.jsonl").write_text("\\n".join(rows[:3]) + "\\n")
resumed = train(4, out_dir=out, resume=True)
assert resumed.resumed_from == 3 and resumed.history == [
  {**row, "seconds": r["seconds"]} for row, r in zip(four.history, resumed.history)
]
# Orbax restores onto the template's shardings: carries split, the rest replicated
mesh = training.make_mesh(4)
rep, split = training.replicated(mesh), training.batch_sharded(mesh, 0)
params = resumed.model.init(jax.random.key(0))
template = dict(
  params=training.put(params, rep),
  opt_state=training.put(training.make_optimizer().init(params), rep),
  carries=training.put(resumed.model.initial_carry(8), split),
  key=training.put(jax.random.key(0), rep),
)
state = checkpoint.restore(out, template).state
h = state["carries"][0][0]
assert h.shape == (8, 8) and h.sharding.spec == jax.sharding.PartitionSpec("batch")
assert len(h.sharding.device_set) == 4 and h.addressable_shards[0].data.shape == (2, 8)
assert state["params"].out.w.sharding.is_fully_replicated

print("CURVE", json.dumps(curve(four.history, "loss").tolist()))
"""
)

TWO_PROCESSES = (
  PRELUDE
  + """
process, port, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
jax.distributed.initialize(f"localhost:{port}", 2, process, initialization_timeout=60)
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
run = train(None, out_dir=out)  # all 4 devices, 2 in each process
if process == 0:
  print("CURVE", json.dumps(curve(run.history, "loss").tolist()))
"""
)


def _env(devices, cache):
  """The subprocesses' environment: ``devices`` CPU devices, and one compilation
  cache for all of them (the resumed run and the second processes' evaluation and
  eager initialisation compile the same programs again)."""
  return dict(
    os.environ,
    PYTHONPATH=str(ROOT),
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=str(cache),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )


def _curve(stdout):
  return json.loads(next(l for l in stdout.splitlines() if l.startswith("CURVE "))[6:])


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_one_and_four_devices_agree_and_a_four_device_run_resumes(tmp_path):
  """Then two processes of two devices each (jax.distributed.initialize on
  localhost, the CPU backend's gloo collectives) train the same run as the
  one process of four devices."""
  proc = subprocess.run(
    [sys.executable, "-c", FOUR_DEVICES, str(tmp_path / "run")],
    env=_env(4, tmp_path / "cache"),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
  four = _curve(proc.stdout)

  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", TWO_PROCESSES, str(i), str(port), str(tmp_path / "hosts")],
      env=_env(2, tmp_path / "cache"),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in (0, 1)
  ]
  outputs = [p.communicate(timeout=180) for p in procs]
  for p, (out, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, out + err[-4000:]
  np.testing.assert_allclose(_curve(outputs[0][0]), four, rtol=2e-6)
  state = tmp_path / "hosts" / "checkpoints" / "6" / "state"
  assert {p.name for p in state.glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
