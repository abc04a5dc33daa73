"""determinism.pinned() holds every BLAS at 1 thread, scipy's own OpenBLAS included even when scipy is first
imported inside the block (threadpoolctl only limits the libraries loaded when the limit is set)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_blas_loaded_inside_the_block_is_pinned():
    code = textwrap.dedent(
        """
        import sys
        assert "scipy" not in sys.modules
        from threadpoolctl import threadpool_info
        from onnxcomp.determinism import pinned
        with pinned():
            import scipy.linalg  # a pass's lazy import
            pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
            print(len(pools), [p["num_threads"] for p in pools])
            assert pools and all(p["num_threads"] == 1 for p in pools), pools
        """
    )
    env_threads = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env_threads}, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
