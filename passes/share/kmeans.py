"""kmeans: weight sharing through per-layer k-means codebooks (Deep Compression stage 2)."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Literal

from onnxcomp.analysis.weights import (
    Target,
    bits_for,
    collect_targets,
    per_layer_value,
    per_layer_value_of,
)
from onnxcomp.errors import UsageError
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from . import _gather, _recurrent
from ._calibration import (
    MAX_ROWS,
    current_inputs,
    data_free_layers,
    dense_solve_flops,
    enough_rows,
    input_energy,
    layer_inputs,
    paired_grams,
    sequential_waves,
    support_refit,
)
from ._emit import EmitsOps, ShareOptions, emit_weight, saves_bytes, store_table
from ._encode import (
    channel_rms,
    compensated_encode,
    encoded_bytes,
    kmeans_encode,
    normalized,
    original_weight,
    refine_codebook,
    refine_flops,
    rescaled,
    scaled_encode,
    weight_name,
)
from ._gptq import DAMP_HELP, PLAIN, Hessians
from ._gptvq import DAMP as GPTQ_DAMP
from ._report import finish, record, rel_error
from ._sums import sum_keeping

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from ._emit import Encoded

logger = logging.getLogger(__name__)


@register_pass
class KMeans(EmitsOps, Pass):
    """MatMul / Gemm / Conv  =>  CodebookMatMul / SparseCodebookMatMul / CodebookConv: k-means (lossy).

    Every weight becomes a ``bits``-bit index into a codebook of 2**bits floats (one per layer, or one per
    ``group_size`` output channels), found by 1-D k-means from Deep Compression's linear initialization
    (centroids evenly spaced over [min, max]). With calibration data, ``weighted`` counts each weight with
    the activation energy E[x_k**2] of its input feature, and ``refine`` then re-fits the codebook values
    by least squares on the layer outputs, sum_j (w_j' - w_j)^T X^T X (w_j' - w_j), the codes fixed.
    In layers with at least 1% exact zeros (e.g. after ``prune-weights``) the zeros keep a reserved code
    0 = 0.0 and stay exactly zero; such MatMul layers are stored EIE-style (SparseCodebookMatMul, relative
    row indices) when that is smaller (``sparse=auto``). Codes are bit-packed on disk; the model runs in
    plain onnxruntime through the ops' function bodies, which onnxruntime folds into float weights at
    load time.

    ``sequential`` (on by default when calibration data is given) takes the layers in dependency order,
    as SparseGPT/OBC's sequential mode: each layer is quantized on its input X_c in the graph quantized
    so far, towards its output X_o W in the original graph. Its float weights are first re-fit by least
    squares on their nonzeros (min ||X_c W' - X_o W||^2, zeros stay zero), then clustered (weighted by
    the energy of X_c), and ``refine`` fits the codebook to the same target with the codes fixed, so
    every layer also makes up for the error of the layers before it. A layer whose re-fit would cost more
    than ``max_refine_flops``, or with fewer than 2 sampled
    input positions per nonzero weight of an output is quantized one-shot (on its original input;
    counter ``layers_one_shot``), as the re-fit would fit the calibration samples rather than the model.
    """

    name = "kmeans"
    lossless = False

    @dataclasses.dataclass
    class Options(ShareOptions):
        bits: int = opt(4, "code bits per weight, 1..8 (codebooks of 2**bits entries)")
        bits_per_layer: dict[str, int] = opt({}, "bits for layers matching a name pattern, e.g. fc*:2;conv1:8")
        group_size: int | Literal["auto", "scaled"] | None = opt(
            None,
            "output channels sharing one codebook (0: one codebook per layer, 1: one per channel); auto: one "
            "per layer or one per channel, chosen per layer from the weights' channel SQNR (per-channel codebooks "
            "only where they store fewer bits than one 8-bit codebook, else that codebook), layers far "
            "below the others' SQNR keep 8 bits, and small layers one codebook leaves poor are kept at 8 bits (or "
            "float32 where that is not smaller) within 1% of the model's stored bits (_granularity); with "
            "calibration data the compensated and "
            "plain encodings keep that choice. In the budget mode auto's encoding at each candidate width is one "
            "more candidate next to one codebook per layer. scaled: one codebook per layer at each output "
            "channel's scale (a scale per channel, coremltools' per-channel-scale palettization). Unset: auto (in the "
            "budget mode too; 0 was its default before: measured in benchmarks/QUALITY.md)",
        )
        block_size: int = opt(
            0,
            "input features per codebook block: one codebook per (group of output channels, block of this many "
            "inputs; a Conv's inputs are C/group*kh*kw in im2col order), as coremltools' grouped-channel "
            "palettization and GPTVQ's blocks; with group-size=auto the blocks are one more candidate, taken "
            "where they gain more channel SQNR per stored bit. 0: off (codebooks span all inputs)",
        )
        init: Literal["linear", "density"] = opt(
            "linear", "centroid initialization: linear (Deep Compression) or density (weighted quantiles)"
        )
        weighted: bool = opt(True, "with calibration data, weight k-means by input-feature activation energy")
        sparse: Literal["auto", "never", "always"] = opt(
            "auto", "EIE sparse layout for MatMul layers with zeros: auto = when it stores fewer bytes"
        )
        max_iter: int = opt(300, "maximum Lloyd iterations")
        refine: bool = opt(
            True,
            "with calibration data, re-fit the codebook values by least squares on the "
            "layer outputs (the codes stay): min sum_j (w_j' - w_j)^T X^T X (w_j' - w_j)",
        )
        max_refine_flops: float = opt(2e10, "skip the refinement of layers costing more than this")
        target_bits: float = opt(
            0.0,
            "mixed precision under a budget: average stored bits per weight over the compressed layers "
            "(codebooks included); each layer's bits are chosen from candidate-bits to meet it with the "
            "least predicted error: with calibration data the model-output error measured with only "
            "that layer quantized (see trials; on sensitivity-samples samples), without it the weight's relative "
            "squared error. 0 = off (bits / bits-per-layer apply)",
        )
        target_ratio: float = opt(0.0, "budget as a compression ratio of the compressed layers: target-bits = 32 / R")
        candidate_bits: list[int] = opt([2, 3, 4, 5, 6, 8], "bit widths the budget mode chooses from")
        sensitivity_samples: int = opt(8, "calibration samples of each sensitivity measurement (budget mode)")
        trials: Literal["plain", "written"] = opt(
            "plain",
            "budget mode with calibration data: how each candidate width is encoded for its sensitivity trial. "
            "plain: energy-weighted k-means (pessimistic where the compensated encoding written corrects much); "
            "written: as it would be written (compensated, refined, fitted without the samples measured on), "
            "closer to each layer's own error but blind to how compensated layers fed each other's errors add "
            "up (text detector budget 5: IoU 0.920 -> 0.955, recognizer CER 0.010 -> 0.021; "
            "benchmarks/QUALITY.md)",
        )
        sensitivity_outputs: list[str] = opt(
            [],
            "tensors the budget mode's output error is measured on (default: every float graph output): the "
            "outputs the task uses where others carry what it ignores (a sentence embedding next to per-token "
            "outputs at padded positions), or a tensor inside the graph (a classifier's logits, where its "
            "softmax saturates on confident samples)",
        )
        embeddings: bool = opt(
            True,
            "also compress constant Gather tables (token / position embeddings, float32 [V, D], axis 0) as "
            "CodebookGather: the same codebooks over table rows, only the gathered rows decoded at run time",
        )
        recurrent: bool = opt(
            True,
            "also compress the W and R weights of LSTM / GRU / RNN nodes (float32 constants) with the same "
            "codebooks over their gate rows, decoded whole in the graph by a CodebookDecode (function body only: "
            "onnxruntime folds it at load under every runtime); with calibration data (compensate) the rows are "
            "rounded with GPTQ on the Hessians of the steps' inputs (W) and of the previous hidden states (R)",
        )
        compensate: bool | None = opt(
            None,
            "error-compensated quantization (GPTQ's order on the k-means codebook, as GPTVQ): inputs "
            "quantized one at a time in decreasing order of their activation energy, each one's error "
            "moved onto the inputs not yet quantized through the inverse Hessian of the layer output "
            "(H = X^T X + damp * mean(diag H) * I), the codebook fitted by k-means weighted with GPTQ's 1/U_ii^2. "
            "Default (unset): on when calibration data is given. Layers with fewer sampled input "
            "positions than inputs (e.g. squeeze-excitation convs) or a factorization over "
            "max_refine_flops use plain k-means (counters layers_plain_*); a layer keeps plain k-means "
            "when that has the lower output error",
        )
        damp: float = opt(GPTQ_DAMP, DAMP_HELP)
        sum_keeping: bool = opt(
            True,
            "data-free: where a codebook is shared by several output channels, move codes to a neighbouring entry so "
            "that each channel's weights keep their sum (the output mean does not shift where inputs share a mean, "
            "as after a ReLU: data-free bias correction without BatchNorm statistics), kept where that adds at most "
            "1% to the layer's squared weight error. With calibration data the refit and the compensation see the "
            "mean themselves",
        )
        sequential: bool | None = opt(
            None,
            "take the layers in dependency order; re-fit each layer's weights, then cluster and refine, "
            "on its input in the graph quantized so far towards its ORIGINAL output (it also corrects "
            "the earlier layers). Default (unset): on when calibration data is given; true without "
            "calibration data is an error. With the compensated mode (the default with calibration data) it is "
            "off unless set. Costs one onnxruntime run over the calibration data per "
            "layer level plus a dense least-squares solve per layer: on big models that can add "
            "minutes, set false to save it. Wants >= ~128 calibration samples (with fewer it can fit "
            "the samples rather than the model)",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        o = self.options
        result = self.new_result()
        for b in [o.bits, *o.bits_per_layer.values()]:
            if not 1 <= int(b) <= 8:
                raise UsageError(f"kmeans: bits must be 1..8, got {b}")
        budget = o.target_bits or (32.0 / o.target_ratio if o.target_ratio > 0 else 0.0)
        # unset: auto, in the budget mode too (stop 21: with one codebook per layer only, a large layer of unequal
        # channels, ddddocr's 1024 x 8210 classifier, has no good candidate the budget can afford)
        group = o.group_size if o.group_size is not None else "auto"
        if group not in ("auto", "scaled") and int(group) < 0:
            raise UsageError("kmeans: group-size must be >= 0, auto or scaled")
        if o.block_size < 0:
            raise UsageError(f"kmeans: block-size must be >= 0, got {o.block_size}")
        self._group = 0 if group in ("auto", "scaled") else int(group)  # (auto: per layer where no choice is recorded)
        self._group_auto = group == "auto"
        self._scaled = group == "scaled"
        if o.sequential and ctx.calib is None:
            raise UsageError("kmeans: sequential=true needs calibration data (--calib)")
        if o.compensate and ctx.calib is None:
            raise UsageError("kmeans: compensate=true needs calibration data (--calib)")
        if o.damp <= 0:
            raise UsageError(f"kmeans: damp must be > 0, got {o.damp}")
        if o.target_bits < 0 or o.target_ratio < 0 or (o.target_bits and o.target_ratio):
            raise UsageError("kmeans: give one of target_bits > 0 or target_ratio > 0")
        if not o.candidate_bits or any(not 1 <= int(b) <= 8 for b in o.candidate_bits):
            raise UsageError(f"kmeans: candidate_bits must be in 1..8, got {o.candidate_bits}")
        targets = collect_targets(graph, o, result, half=True)
        tables = self._tables(graph, ctx, result)
        if not targets and not tables:
            return finish(graph, ctx, result, o)
        self._bits: dict[int, int] = {}
        self._auto: dict[int, Any] = {}
        # X_orig: every layer's input in the graph as it came in, captured before anything changes
        compensate = o.compensate is not False and ctx.calib is not None
        # unset: on with calibration data unless the compensated mode corrects the errors (one-shot GPTQ
        # is about as good and needs no capture of the model per layer level)
        sequential = ctx.calib is not None and (o.sequential or (o.sequential is None and not compensate))
        uses_acts = o.weighted or o.refine or sequential or compensate
        acts = layer_inputs(graph, ctx, targets, o.calib_samples) if uses_acts and targets else {}
        energy = input_energy(graph, ctx, targets, o.calib_samples, acts) if o.weighted and acts else {}
        if budget:
            self._hessians = Hessians(o.max_refine_flops, ctx.rng(11), o.damp)  # trials=written's
            self._bits = self._allocate(graph, ctx, [*targets, *tables], budget, result, acts, energy, compensate)
        elif group == "auto":
            from ._granularity import choose_all

            bits_of = {id(t): bits_for(t, o.bits, o.bits_per_layer) for t in targets}
            fixed = {id(t) for t in targets if per_layer_value(t, None, o.bits_per_layer) is not None}
            self._auto = choose_all(
                targets, bits_of, fixed, o.init, o.max_iter, ctx.rng(13), o.block_size, o.codebook_dtype
            )
        self._table_hs = self._recurrent_hessians(graph, ctx, tables, result) if compensate else {}
        for tt in tables:
            self._encode_table(graph, ctx, tt, result)
        if not targets:
            return finish(graph, ctx, result, o)
        data_free_layers(ctx, targets, acts if uses_acts else [t.x.name for t in targets], result)
        waves = sequential_waves(targets) if sequential else [targets]
        energy0 = energy  # on the original inputs
        rng = ctx.rng(11)
        self._hessians = Hessians(o.max_refine_flops, rng, o.damp)
        # the budget mode writes each layer with its trials' seed (the trials were fitted without the samples they
        # were measured on, the layer written is fitted on all)
        steps = [(k, t) for k, wave in enumerate(waves) for t in wave]
        cur, at, changed = acts, 0, False
        for k, t in ctx.track(steps, "kmeans", total=len(steps)):
            if k != at:
                at = k
                if changed:
                    # X_cur: the wave's inputs with every earlier layer already quantized
                    cur = current_inputs(graph, ctx, waves[k], o.calib_samples)
                    if o.weighted:
                        energy = input_energy(graph, ctx, waves[k], o.calib_samples, cur)
            x, x_orig, e_t = cur.get(t.x.name), None, energy.get(id(t))
            if cur is not acts and x is not None:  # (none for a layer in an If branch the data does not take)
                x_orig = acts[t.x.name]
                if (
                    not enough_rows(t, x, int((t.w2 != 0).sum(axis=1 - t.out_axis).max()))
                    or dense_solve_flops(t) > o.max_refine_flops
                ):
                    # too few calibration positions per weight, or too large a layer for the re-fit:
                    # quantized one-shot, on its original input
                    x, x_orig, e_t = x_orig, None, energy0.get(id(t))
                    result.count("layers_one_shot")
            t_rng = ctx.rng(TRIAL_SEED) if budget and o.trials == "written" else rng
            changed |= self._encode(graph, ctx, t, x, x_orig, e_t, t_rng, result, compensate)
        return finish(graph, ctx, result, o)

    def _tables(self, graph: gs.Graph, ctx: PassContext, result: PassResult) -> list[_gather.TableTarget]:
        """The embedding tables and the recurrent weights to encode (``embeddings``, ``recurrent``)."""
        o = self.options
        tables = _gather.table_targets(graph, o, result) if o.embeddings else []
        return tables + (_recurrent.recurrent_targets(graph, o, result) if o.recurrent else [])

    def emits(self, graph: gs.Graph, ctx: PassContext) -> bool:
        """Weight targets, or (``embeddings``) embedding tables to write (the opset precondition, EmitsOps)."""
        probe = PassResult(name="probe")
        return super().emits(graph, ctx) or bool(self._tables(graph, ctx, probe))

    def _recurrent_hessians(
        self, graph: gs.Graph, ctx: PassContext, tables: list[_gather.TableTarget], result: PassResult
    ) -> dict[int, list[np.ndarray] | str]:
        """With calibration data, per recurrent weight (by id): the Hessians of its rows (``_recurrent.hessians``),
        or why its codes stay plain (the report's words)."""
        rec = [t for t in tables if isinstance(t, _recurrent.RecurrentTarget)]
        found: dict[int, list[np.ndarray] | str] = {}
        reads: dict[int, tuple[list[gs.Node], list[str]]] = {}
        for t in rec:
            got = _recurrent.hessian_input(t)
            if isinstance(got, str):
                found[id(t)] = got
            else:
                reads[id(t)] = got
        names = sorted({n for _, ns in reads.values() for n in ns})
        acts = ctx.capture(graph, names, self.options.calib_samples) if names else {}
        rng = ctx.rng(19)
        for t in rec:
            if id(t) not in reads:
                continue
            got = _recurrent.hessians(t, reads[id(t)][0], acts, MAX_ROWS, rng)
            if got is None:
                found[id(t)] = "its input was not captured (a branch the calibration data does not take)"
                continue
            hs, rows = got
            # H of rank < inputs: GPTQ would fit the calibration steps (as for a layer, ``Hessians.reason``)
            found[id(t)] = hs if rows >= t.w2.shape[1] else "fewer calibration steps than inputs"
        return found

    def _encode_table(self, graph: gs.Graph, ctx: PassContext, t: _gather.TableTarget, result: PassResult) -> None:
        o = self.options
        bits = self._bits.get(id(t)) or int(per_layer_value_of(o.bits, o.bits_per_layer, t.node.name, t.table.name))
        hs, how = self._table_hs.get(id(t)), ""
        if isinstance(hs, list):
            # error-compensated codes of the rows (a recurrent weight with calibration data: ``_recurrent``)
            e, gptq = compensated_encode(_recurrent.ROWS, t.w2, bits, self._group, hs, ctx.rng(19), damp=o.damp)
            e = store_table(None, e, o.codebook_dtype)
            how = " compensated" if gptq else " (plain: lower output error than compensated)"
            result.count("recurrent_compensated" if gptq else "recurrent_plain_better")
        else:
            e = store_table(None, kmeans_encode(t.w2, bits, self._group, 0, o.init, None, o.max_iter), o.codebook_dtype)
            if isinstance(hs, str):
                how = f" (plain: {hs})"
                result.count("recurrent_plain")
        if _gather.table_bytes(t, e) >= 4 * t.params:
            result.skip(t.name, f"{t.params} table values: a {bits}-bit codebook would not make it smaller")
            return
        recurrent = isinstance(t, _recurrent.RecurrentTarget)
        em = (_recurrent.emit_weight if recurrent else _gather.emit_table)(graph, ctx, t, e, self.name)
        err = rel_error(t.w2, e.decoded(0))
        what = f"{t.node.op} {_recurrent.SLOTS[t.slot]}" if recurrent else "embedding table"
        record(result, t, f"kmeans {bits}-bit {what}{how}", e, em, err, float((t.w2 == 0).mean()))

    def _allocate(
        self,
        graph: gs.Graph,
        ctx: PassContext,
        targets: list[Any],
        budget: float,
        result: PassResult,
        acts: dict[str, np.ndarray],
        energy: dict[int, np.ndarray],
        compensate: bool,
    ) -> dict[int, int]:
        """Bits per layer (by id) meeting ``budget`` stored bits per weight with the least predicted error.

        Each candidate is measured as it would be written: with calibration data a layer's trial encoding is
        the compensated (or energy-weighted), least-squares refined encoding of ``_encoding`` on the layer's
        original input (the sequential mode's re-fit aside), so the allocation sees what compensation does
        for each layer at each width rather than plain k-means' error. The trials are fitted without the
        samples the output error is measured on (where as many remain), so that the error is not the fit's
        own: measured on its fitting data a compensated layer looks better than it is, most where calibration
        rows are few per input (transformer layers)."""
        import numpy as np

        from . import _budget, _sensitivity

        o = self.options
        cands = sorted({int(b) for b in o.candidate_bits})
        scratch = PassResult(name="trial")  # the trials' counters and skips are not the pass's
        probe, held = None, 0
        if ctx.calib is not None:
            probe = _sensitivity.OutputErrors(
                graph, ctx, [weight_name(t) for t in targets], o.sensitivity_samples, o.sensitivity_outputs
            )
            captured = min(probe.total or 0, o.calib_samples)  # the samples layer_inputs captured
            # a trial is fitted without the samples it is measured on (GPTQ and the lsq refit fit their data: on
            # those samples a transformer layer looked up to several times better than it is), where at least
            # as many samples stay for the fit
            held = probe.taken if probe.taken and captured >= 2 * probe.taken else 0

        def fit_input(x: np.ndarray | None) -> np.ndarray | None:
            """A layer's input for the trials' fit: without the probe's samples (sample axis 0 as captured)."""
            if x is None or not held:
                return x
            if x.shape[0] == captured:
                result.count("budget_trials_held_out")
                return x[held:]
            result.count("budget_trials_in_sample")
            return x

        layers, bits_of = [], []
        for t in ctx.track(targets, "kmeans sensitivity", total=len(targets)):
            opts, bits = [], []
            axis = 0 if isinstance(t, _gather.TableTarget) else t.out_axis
            written = o.trials == "written" and isinstance(t, Target)
            x = fit_input(acts.get(t.x.name)) if written else None  # one view: the Hessians are held
            for b in cands:
                # group-size=auto: auto's granularity at this width is one more candidate where it is not one
                # codebook for the layer (per channel, blocks)
                pick = self._granularity(t, b, ctx) if isinstance(t, Target) else None
                e_t = energy.get(id(t))
                if written:
                    encodings = [
                        (self._encoding(t, b, p, x, None, e_t, ctx.rng(TRIAL_SEED), scratch, compensate)[0], (b, a))
                        for p, a in ((None, False), (pick, True))
                        if p is not None or not a
                    ]
                else:  # plain (tables: one codebook per table, no blocks, no calibration weighting)
                    blocks = o.block_size if isinstance(t, Target) else 0
                    if self._scaled and isinstance(t, Target):
                        e = scaled_encode(t.w2, b, axis, o.init, e_t, o.max_iter)
                    else:
                        rng_t = ctx.rng(TRIAL_SEED)
                        e = kmeans_encode(t.w2, b, self._group, axis, o.init, e_t, o.max_iter, blocks, rng_t)
                    encodings = [(store_table(t if isinstance(t, Target) else None, e, o.codebook_dtype), (b, False))]
                    if pick is not None:
                        encodings.append((store_table(t, pick.encoded, o.codebook_dtype), (b, True)))
                for enc, key in encodings:
                    w_hat = enc.decoded(axis)
                    if probe is not None:
                        err = probe.error(weight_name(t), original_weight(t, w_hat))
                    else:
                        err = _sensitivity.weight_proxy(t.w2, w_hat)
                    cost = 8.0 * encoded_bytes(t, enc)
                    opts.append(_budget.Option(cost, err))
                    bits.append(key)
            if probe is not None and not any(op.error for op in opts):
                # no calibration sample reaches the layer (e.g. an If branch the data never takes): its zero
                # output errors would give it the fewest bits; it keeps the candidate nearest to ``bits``
                keep = min(range(len(cands)), key=lambda i: (abs(cands[i] - o.bits), -cands[i]))
                keep = bits.index((cands[keep], False))
                opts, bits = [opts[keep]], [bits[keep]]
                result.count("budget_layers_not_reached")
            layers.append(opts)
            bits_of.append(bits)
        params = sum(t.params for t in targets)
        # without data the proxy cannot see that the first and last layers are sensitive (a CRNN's 1024 x 8210
        # classifier, 62% of its weights, took 3 bits and the CER went to 0.43): they keep at least the largest
        # candidate within the budget, as quantization papers keep them at higher precision, where the budget
        # affords it
        floor_bits = max([b for b in cands if b <= budget], default=min(cands))
        edges = edge_targets(targets) if probe is None else set()
        allowed = [
            [i for i, (b, _) in enumerate(keys) if id(t) not in edges or b >= floor_bits]
            for t, keys in zip(targets, bits_of, strict=True)
        ]
        try:
            kept = _budget.allocate(
                [[opts[i] for i in idx] for opts, idx in zip(layers, allowed, strict=True)], budget * params
            )
            choice = [idx[c] for idx, c in zip(allowed, kept, strict=True)]
            if any(len(idx) < len(opts) for opts, idx in zip(layers, allowed, strict=True)):
                result.count("budget_edge_layers", len(edges))
        except _budget.BudgetError:
            try:
                choice = _budget.allocate(layers, budget * params)
            except _budget.BudgetError as err:
                raise UsageError(
                    f"kmeans: target of {budget:.3g} bits per weight is below what {min(cands)}-bit "
                    "codebooks store (choose more bits or smaller candidate-bits)"
                ) from err
        stored = sum(layers[i][c].cost for i, c in enumerate(choice))
        result.count("budget_bits_target", round(budget, 4))
        result.count("budget_bits", round(stored / params, 4))
        result.count("budget_predicted_error", float(np.float32(sum(layers[i][c].error for i, c in enumerate(choice)))))
        how = "output error" if probe is not None else "weight error proxy"
        logger.info("kmeans budget %.3f bits: %.3f stored (%s)", budget, stored / params, how)
        chosen = {}
        for t, keys, c in zip(targets, bits_of, choice, strict=True):
            b, auto = keys[c]
            chosen[id(t)] = b
            if auto:  # the same seed gives the encoding measured (the candidates' codes are not all kept)
                self._auto[id(t)] = self._granularity(t, b, ctx)
        return chosen

    def _granularity(self, t: Target, bits: int, ctx: PassContext) -> Any:
        """group-size=auto in the budget mode: the encoding ``_granularity.choose`` takes for the layer at
        ``bits`` from the channel SQNR, when it is not one codebook for the layer (per channel or blocks); None
        when it is, or when the group size is fixed."""
        if not self._group_auto:
            return None
        from ._granularity import choose

        o = self.options
        pick = choose(t, bits, o.init, o.max_iter, ctx.rng(17), o.block_size, o.codebook_dtype, fallback=False)
        return pick if pick.group_size or pick.block_size else None

    def _encode(
        self,
        graph: gs.Graph,
        ctx: PassContext,
        t: Target,
        x: np.ndarray | None,
        x_orig: np.ndarray | None,
        energy: np.ndarray | None,
        rng: np.random.Generator,
        result: PassResult,
        compensate: bool = False,
    ) -> bool:
        """Cluster, refine and emit one layer; True if it was replaced."""
        o = self.options
        choice = self._auto.get(id(t))
        bits = choice.bits if choice is not None else self._bits.get(id(t)) or bits_for(t, o.bits, o.bits_per_layer)
        # group-size=auto: the granularity (per layer / per channel / blocks) the weights' SQNR chose, also for
        # the compensated and the sequential encodings
        e, decision, smaller = self._encoding(t, bits, choice, x, x_orig, energy, rng, result, compensate)
        if not smaller:
            why = f" (kmeans {bits}-bit {choice.reason})" if choice is not None else ""
            result.skip(t.name, f"{t.params} weights: a {bits}-bit codebook would not make it smaller{why}")
            return False
        em = emit_weight(graph, ctx, t, e, result, pass_name=self.name, sparse=o.sparse, huffman=o.huffman)
        if em is None:
            return False
        w_hat = e.decoded(t.out_axis)
        sparsity = float((t.w2 == 0).mean())
        blocks = {"block_size": e.block_size} if e.block_size else {}
        record(result, t, decision, e, em, rel_error(t.w2, w_hat), sparsity, **blocks)
        return True

    def _encoding(
        self,
        t: Target,
        bits: int,
        choice: Any,
        x: np.ndarray | None,
        x_orig: np.ndarray | None,
        energy: np.ndarray | None,
        rng: np.random.Generator,
        result: PassResult,
        compensate: bool,
    ) -> tuple[Encoded, str, bool]:
        """One layer's encoding as it is stored (compensated / weighted / sequential, refined, the codebook in
        its stored type), the report's decision, and whether it stores fewer bytes than the float weight (not:
        left unrefined); ``choice``: auto's granularity pick, or None (the pass's group / block size). The
        budget mode's written trials measure exactly this."""
        o = self.options
        group, blocks = (choice.group_size, choice.block_size) if choice is not None else (self._group, o.block_size)
        scaled = choice is None and self._scaled
        w2, grams = t.w2, None
        if x_orig is not None and x is not None:
            # sequential: first the float weights that best give the original output on the current input
            grams = paired_grams(t, x, x_orig, rng)
            refit = support_refit(t, grams, DAMP, o.max_refine_flops)
            if refit is None:
                result.skip(t.name, "sequential weight re-fit skipped: too expensive (max-refine-flops)")
            else:
                w2 = refit
        e, how = None, ""
        if compensate and x is not None:
            # H = X^T X of rank < inputs: GPTQ would fit the calibration samples (issue 13's SE convs)
            why = self._hessians.reason(t, x)
            if why is None:
                factors = None
                if grams is None:
                    hs, factors = self._hessians.of(t, x)
                    grams = (hs, None)
                if scaled:  # GPTQ on the weights at their channel's scale, then the scales refitted
                    u2 = normalized(w2, t.out_axis, channel_rms(w2, t.out_axis))
                    e, gptq = compensated_encode(t, u2, bits, 0, grams[0], rng, factors, damp=o.damp)
                    e = rescaled(w2, e, t.out_axis, (grams[0], None))
                else:
                    e, gptq = compensated_encode(t, w2, bits, group, grams[0], rng, factors, blocks, o.damp)
                how = " compensated" if gptq else " (plain: lower output error than compensated)"
                result.count("layers_compensated" if gptq else "layers_plain_better")
            else:
                result.count(why)
                how = PLAIN[why]
        if e is None and choice is not None and w2 is t.w2 and energy is None:
            e = choice.encoded  # data-free: the encoding auto chose
        elif e is None and scaled:
            e = scaled_encode(w2, bits, t.out_axis, o.init, energy, o.max_iter)
        elif e is None:  # at the chosen granularity, weighted by the input energy / of the sequential re-fit
            e = kmeans_encode(w2, bits, group, t.out_axis, o.init, energy, o.max_iter, blocks, rng)
        if o.sum_keeping and x is None and energy is None and w2 is t.w2:
            kept = sum_keeping(t, e)
            if kept is not None:
                e = kept
                how += ", sum-keeping codes"
                result.count("layers_sum_keeping")
        if choice is not None:
            how = f"{how}{', ' if how else ' '}{choice.reason}"
        decision = f"kmeans {bits}-bit{how}" + (" of the sequential re-fit" if w2 is not t.w2 else "")
        if scaled:
            decision += ", one codebook at each output channel's scale"
        if e.block_size and (choice is None or e is not choice.encoded):
            decision += f", codebooks per {e.block_size} inputs ({e.table.shape[0]} codebooks)"
        if not saves_bytes(t, store_table(t, e, o.codebook_dtype)):
            return store_table(t, e, o.codebook_dtype), decision, False
        if o.refine and x is not None:
            if refine_flops(t, e) > o.max_refine_flops:
                result.skip(t.name, "codebook refinement skipped: too expensive (max-refine-flops)")
            else:
                if e.scales is not None:  # the codebook of the normalized weights, then the scales again
                    grams = grams if grams is not None else paired_grams(t, x, x_orig, rng)
                    u = dataclasses.replace(t, w2=normalized(t.w2, t.out_axis, e.scales))
                    plain = dataclasses.replace(e, scales=None)
                    e.table = refine_codebook(u, plain, x, rng, x_orig=x_orig, grams=grams)
                    # on the layer output of the original weights, as the codebook was refit
                    e = rescaled(t.w2, e, t.out_axis, grams)
                else:
                    e.table = refine_codebook(t, e, x, rng, x_orig=x_orig, grams=grams)
                decision += " + lsq codebook" + (" sequential" if x_orig is not None else "")
        # the refit codebook as stored: w_hat is what the model decodes (and is checked again: a refit codebook can
        # fail the float16 rule and store float32)
        e = store_table(t, e, o.codebook_dtype)
        return e, decision, saves_bytes(t, e)


def edge_targets(targets: list[Any]) -> set[int]:
    """ids of the layers no other layer of their graph precedes (the first layers) or follows (the last ones): of
    the main graph, or, where every layer sits in an If / Loop / Scan body (Silero VAD: the whole model in the
    branches of an If on the sample rate), of each body."""
    layers = [t for t in targets if isinstance(t, Target)]
    main = [t for t in layers if t.owner is None]
    scopes: dict[int, list[Target]] = {}
    for t in main or layers:
        scopes.setdefault(id(t.owner), []).append(t)
    return {i for scope in scopes.values() for i in _scope_edges(scope)}


def _scope_edges(scope: list[Target]) -> set[int]:
    """ids of the layers of one graph (``scope``) that no other of them precedes or follows."""
    ids = {id(t.node): t for t in scope}

    def reaches(t: Target, down: bool) -> bool:
        stack = list(t.node.outputs if down else t.node.inputs)
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            for n in tensor.outputs if down else tensor.inputs:
                if id(n) in ids and n is not t.node:
                    return True
                stack.extend(n.outputs if down else n.inputs)
        return False

    return {id(t) for t in ids.values() if not reaches(t, True) or not reaches(t, False)}


TRIAL_SEED = 17  # the budget mode's per-layer seed (trials and the encoding written)
DAMP = 0.01  # sequential weight re-fit: ridge relative to the mean diagonal of the input Gram matrix
