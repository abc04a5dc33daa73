"""A compressed model whose com.onnxcomp nodes live inside If branches and a Loop body (Silero VAD's shape)
runs under the native custom ops and under the execution provider (onnxruntime hands it each body graph to
claim separately), giving what the function bodies give."""

from __future__ import annotations

import numpy as np
import pytest
from eputil import ep_nodes, ep_session

from tests.support.models import control_flow_feeds, control_flow_layers
from tests.support.run import outputs, run_pipeline

pytestmark = pytest.mark.usefixtures("runtime_lib")


@pytest.fixture(scope="module")
def compressed():
    out, report = run_pipeline(control_flow_layers(), "kmeans(bits=4)")
    assert {r.name for r in report.passes[-1].layers} == {
        "then_conv",
        "then_gemm",
        "else_conv",
        "else_matmul",
        "loop_matmul",
    }
    return out


@pytest.mark.parametrize("flag", [True, False])
def test_custom_ops_inside_bodies_equal_the_function_bodies(compressed, flag):
    feeds = control_flow_feeds(flag)
    body, native = outputs(compressed, feeds), outputs(compressed, feeds, runtime=True)
    for name in body:
        np.testing.assert_allclose(native[name], body[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_execution_provider_runs_the_body_nodes(ep_devices, compressed, tmp_path):
    from collections import Counter

    kernels = {}
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        body = outputs(compressed, feeds)
        sess = ep_session(compressed)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
        for name in body:
            np.testing.assert_allclose(got[name], body[name], rtol=1e-4, atol=1e-4, err_msg=f"{name} flag={flag}")
        kernels[flag] = Counter(ep_nodes(compressed, feeds, tmp_path))
    for ran in kernels.values():
        assert 3 in ran.values(), ran  # the Loop body's CodebookMatMul, once per trip
    # each branch's layers: a kernel of the taken branch only
    assert set(kernels[True]) - set(kernels[False]) and set(kernels[False]) - set(kernels[True]), kernels
