"""Sessions on the OnnxcompExecutionProvider for the EP tests (the registration fixture, ep_devices, is in
conftest.py): a session with plan options, and the nodes the EP ran (from onnxruntime's profile)."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort

from onnxcomp import runtime


def ep_session(
    model: onnx.ModelProto, *, min_weights: int = 0, threads: int = 1, profile: str | None = None, options=None
):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.add_session_config_entry("ep.onnxcomp.min_weights", str(min_weights))
    for k, v in (options or {}).items():
        so.add_session_config_entry(k, str(v))
    if profile is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    so.add_provider_for_devices(runtime.register_ep(), {})
    return ort.InferenceSession(model.SerializeToString(), so)


def ep_nodes(model, feeds, tmp_path, **kw) -> list[str]:
    """Names of the nodes the EP ran (from onnxruntime's profile)."""
    sess = ep_session(model, profile=str(tmp_path / "prof"), **kw)
    sess.run(None, feeds)
    events = json.loads(open(sess.end_profiling()).read())
    return [e["name"] for e in events if e.get("args", {}).get("provider") == runtime.get_ep_name()]


def cpu_op_counts(model, feeds, tmp_path, **kw) -> dict[str, int]:
    """How many nodes of each op type the CPU EP ran in one run (from onnxruntime's profile)."""
    sess = ep_session(model, profile=str(tmp_path / "cpu_prof"), **kw)
    sess.run(None, feeds)
    events = json.loads(open(sess.end_profiling()).read())
    counts: dict[str, int] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and args.get("provider") == "CPUExecutionProvider" and "op_name" in args:
            counts[args["op_name"]] = counts.get(args["op_name"], 0) + 1
    return counts
