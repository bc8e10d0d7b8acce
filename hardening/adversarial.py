"""Madry-style adversarial training: fresh PGD examples against the current weights, every batch.

Adversarial examples computed once per round go stale as soon as the weights move (the
model learns to resist *those* perturbations, not the attack), so the hardening loop
trains through :class:`AdversarialTrainer`, a Keras model that wraps the classifier and
overrides ``train_step``: each batch is attacked with PGD against the weights of that
step (random start from the global TensorFlow seed), and the loss is taken on the clean
and the adversarial halves (weighted by the ``adversarial`` weight). ``test_step`` reports ``robust_accuracy`` (PGD on the validation
batch) and ``score`` = mean of clean and robust accuracy, so ``fit`` can keep the best
epoch by ``val_score``.

Everything runs inside Keras' compiled ``train_function`` (and under a ``tf.distribute``
strategy scope when one is active), so it uses whatever devices TensorFlow sees.

Example:
    >>> from hardenkit.testkit import tiny_model
    >>> t = AdversarialTrainer(tiny_model(), eps=8 / 255, steps=3)
    >>> t.steps, round(t.step_size, 4)
    (3, 0.0261)
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from attacks.pgd import linf_pgd_steps


#: Items per image the attention loss looks at (the rest count as none).
MAX_ITEMS = 8


def item_channel(masks: Any) -> Any:
    """Number each mask's items (8-connected components, 1..:data:`MAX_ITEMS`; 0 = none).

    Args:
        masks: Bool masks ``(n, H, W)``.

    Returns:
        float32 ``(n, H, W, 1)``: the channel :class:`AdversarialTrainer` reads item maps from.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((1, 4, 4), bool); m[0, 0, 0] = m[0, 3, 3] = True
        >>> sorted(np.unique(item_channel(m)).tolist())
        [0.0, 1.0, 2.0]
    """
    import numpy as np

    from cam import label_items

    out = np.zeros((*np.shape(masks), 1), np.float32)
    for i, m in enumerate(masks):
        n, labels = label_items(m)
        if n:
            out[i, ..., 0] = np.where(labels <= MAX_ITEMS, labels, 0)
    return out


class AdversarialTrainer(keras.Model):
    """Wrap ``inner`` (a softmax classifier) for adversarial training; save ``inner`` afterwards.

    Args:
        inner: The Keras classifier (probabilities out, inputs in [0, 1]).
        eps: L-inf budget of the training attack.
        steps: PGD steps per batch (1 = FGSM with a random start, "fast" training).
        step_size: Per-step size; defaults to ``2.5 * eps / steps`` (``1.25 * eps`` for one step).
        adversarial_weight: Loss weight of the adversarial half of each batch. Defaults to 1.
        fgsm_mix: Share of each batch attacked with plain FGSM (no random start) instead.
        eval_steps: PGD steps for the validation ``robust_accuracy``. Defaults to ``steps``.
        eval_eps: L-inf budget of the validation attack; defaults to ``eps``. (Training at a
            somewhat larger budget than the one measured is a common way to buy robustness
            at the measured budget.)
        clean_fraction: Share of each batch also trained on as it is (all of it is trained on
            adversarially). 1 = clean + adversarial halves; 0 = adversarial only (Madry et al.);
            lower is cheaper per epoch and more robust, at some clean accuracy. Defaults to 1.
        min_clean_accuracy: Below this clean accuracy ``score`` is ``clean - 1`` instead of
            mean(clean, robust), so such an epoch is never the best (a collapsed model). Defaults to 0.
        objective: ``"mix"`` (cross-entropy on the clean and the adversarial images, Madry et
            al. with ``clean_fraction`` 0) or ``"trades"`` (Zhang et al. 2019: cross-entropy on
            the clean images plus ``trades_beta`` x KL(clean prediction || adversarial
            prediction), the attack maximising that KL). Defaults to ``"mix"``.
        trades_beta: Weight of the TRADES robustness term. Defaults to 6 (the paper's).
        noise_fgsm: Train on N-FGSM examples instead (de Jorge et al. 2022, "Make some noise"):
            uniform noise within twice the budget, one signed-gradient step of the budget, no
            projection back onto the budget; as cheap as FGSM from a random start, and made
            to avoid its "catastrophic overfitting", where single-step robustness climbs to
            near 1 while multi-step PGD breaks the model. Overrides ``steps``/``fgsm_mix``.
            Defaults to False.
        predicted_labels: The training attack raises the loss of the model's own prediction
            instead of the true label's (Kurakin et al. 2017: a single-step attack on the true
            label can "leak" it, and the model learns to read the perturbation: training
            robust accuracy above the clean one). Costs a forward pass per batch. Defaults to False.
        attention_weight: Weight of the item-coverage loss (:meth:`attention_loss`) on the
            clean half of each batch; 0 = off. It needs item maps: training images with a 4th
            channel numbering each image's ground-truth items (0 = none, 1..
            :data:`MAX_ITEMS`), see :func:`item_channel`. Defaults to 0.
        attention_target: The share of the map's maximum every item should reach. Defaults to 0.6.
        sensitive_indices: Output columns whose summed probability is the sensitive score the
            attention map explains. Required when ``attention_weight`` > 0.
        cam_layer: Layer the attention map is taken at; None = the last one with a spatial
            output (:func:`cam._graph.find_target_layer`, what ``cam`` explains by default).

    The training attack's budget and step are multiplied by ``eps_scale`` (a ``tf.Variable``
    kept out of the saved weights, 1 unless :class:`EpsWarmup` ramps it); the validation
    attack is not.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> AdversarialTrainer(tiny_model(), eps=0.03).eps
        0.03
    """

    def __init__(self, inner: keras.Model, eps: float, steps: int = 3, step_size: float | None = None,
                 adversarial_weight: float = 1.0, fgsm_mix: float = 0.0, eval_steps: int | None = None,
                 clean_fraction: float = 1.0, min_clean_accuracy: float = 0.0, objective: str = "mix",
                 trades_beta: float = 6.0, eval_eps: float | None = None, attention_weight: float = 0.0,
                 attention_target: float = 0.6, sensitive_indices: Any = None, cam_layer: str | None = None,
                 noise_fgsm: bool = False, predicted_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if objective not in ("mix", "trades"):
            raise ValueError(f"expected objective 'mix' or 'trades', got {objective!r}")
        self.objective = objective
        self.noise_fgsm = bool(noise_fgsm)
        self.predicted_labels = bool(predicted_labels)
        self.attention_weight = float(attention_weight)
        self.attention_target = float(attention_target)
        self._split: Any = None
        if self.attention_weight > 0:
            if objective != "mix" or not sensitive_indices:
                raise ValueError("attention_weight > 0 needs the 'mix' objective and sensitive_indices")
            from cam._graph import split_model

            self._split = split_model(inner, cam_layer)
            self.sensitive_indices = [int(i) for i in sensitive_indices]
        self.trades_beta = float(trades_beta)
        eval_eps = eps if eval_eps is None else eval_eps
        if steps < 1 or not 0 <= eps <= 1 or not 0 <= eval_eps <= 1 or not 0 <= fgsm_mix <= 1 or not 0 <= clean_fraction <= 1:
            raise ValueError(f"expected steps >= 1, 0 <= eps <= 1, 0 <= eval_eps <= 1, 0 <= fgsm_mix <= 1, 0 <= clean_fraction <= 1; "
                             f"got steps={steps}, eps={eps}, eval_eps={eval_eps}, fgsm_mix={fgsm_mix}, clean_fraction={clean_fraction}")
        self.clean_fraction = float(clean_fraction)
        self.min_clean_accuracy = float(min_clean_accuracy)
        self.inner = inner
        self.eps = float(eps)
        self.eval_eps = float(eval_eps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size else (1.25 * eps if steps == 1 else 2.5 * eps / steps)
        self.adversarial_weight = float(adversarial_weight)
        self.fgsm_mix = float(fgsm_mix)
        self.eval_steps = int(eval_steps or steps)
        self.robust_tracker = keras.metrics.SparseCategoricalAccuracy(name="robust_accuracy")
        self.clean_tracker = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.loss_tracker = keras.metrics.Mean(name="total_loss")
        self.attention_tracker = keras.metrics.Mean(name="attention_loss")
        # a tf.Variable, not a Keras one: outside the model's weights, so restoring the best
        # checkpoint after a fit does not bring back a warm-up epoch's scale
        self.eps_scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="eps_scale")

    @property
    def output_shape(self) -> Any:
        """The wrapped classifier's output shape (what ``fit_arrays`` sizes class weights by)."""
        return self.inner.output_shape

    def call(self, x: Any, training: bool = False) -> Any:
        return self.inner(x, training=training)

    def _attack(self, x: Any, y: Any, steps: int, step_size: float, random_start: bool = True,
                target: Any = None, eps: float | None = None, noise: float = 1.0) -> Any:
        """L-inf PGD against the current weights (BN in inference): on the cross-entropy of
        ``y``, or with ``target`` probabilities on KL(target || prediction) (TRADES). Without
        ``eps`` (a training attack) budget and step are scaled by ``eps_scale``. ``noise``: the
        random start's range in units of ``eps``; past 1 the result is bounded by ``noise``
        x ``eps`` plus the steps instead of by ``eps`` (N-FGSM)."""
        if eps is None:
            scale = tf.convert_to_tensor(self.eps_scale)
            eps, step_size = self.eps * scale, step_size * scale
        x0 = tf.convert_to_tensor(x, tf.float32)
        bound = eps if noise <= 1 else noise * eps + steps * step_size
        if random_start:
            jitter = tf.random.uniform(tf.shape(x0), -noise * eps, noise * eps)
            xa = tf.clip_by_value(x0 + jitter, 0.0, 1.0)
        else:
            xa = x0

        def grad(xb: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(xb)
                p = self.inner(xb, training=False)
                loss = keras.losses.sparse_categorical_crossentropy(y, p) if target is None \
                    else keras.losses.kl_divergence(target, p)
            return tape.gradient(loss, xb)

        return tf.stop_gradient(linf_pgd_steps(grad, x0, xa, bound, step_size, steps))

    def adversarial_batch(self, x: Any, y: Any) -> Any:
        """The adversarial version of one batch (FGSM for the first ``fgsm_mix`` share, PGD after)."""
        if self.predicted_labels:  # no label leaking: the attack does not see the true label
            y = tf.argmax(self.inner(x, training=False), axis=-1, output_type=tf.int32)
        if self.noise_fgsm:
            return self._attack(x, y, 1, self.eps, noise=2.0)
        if self.fgsm_mix <= 0:
            return self._attack(x, y, self.steps, self.step_size)
        n = tf.shape(x)[0]
        k = tf.cast(tf.round(self.fgsm_mix * tf.cast(n, tf.float32)), tf.int32)
        fgsm = self._attack(x[:k], y[:k], 1, self.eps, random_start=False)
        pgd = self._attack(x[k:], y[k:], self.steps, self.step_size)
        return tf.concat([fgsm, pgd], axis=0)

    def _gradcam(self, acts: Any) -> Any:
        """Grad-CAM of the sensitive score at the target layer, differentiable through ``acts``
        (the channel weights, the spatial mean of the score's gradient, are held constant)."""
        if self._split is None:
            raise ValueError("the attention map needs attention_weight > 0 at construction")
        a = tf.cast(acts, tf.float32)
        fixed = tf.stop_gradient(acts)
        with tf.GradientTape() as tape:
            tape.watch(fixed)
            p = tf.cast(self._split.hi(fixed, training=False), tf.float32)
            score = tf.math.log(tf.reduce_sum(tf.gather(p, self.sensitive_indices, axis=1), axis=1) + 1e-7)
        alpha = tf.stop_gradient(tf.reduce_mean(tf.cast(tape.gradient(score, fixed), tf.float32), axis=[1, 2],
                                                keepdims=True))
        return tf.nn.relu(tf.reduce_sum(alpha * a, axis=-1))

    def attention_loss(self, acts: Any, items: Any) -> Any:
        """Mean over the batch of the item-coverage shortfall of each image's attention map.

        The map (Grad-CAM of the sensitive score at ``cam_layer``) is divided by its maximum;
        each ground-truth item whose peak there stays under ``attention_target`` adds
        ``attention_target - peak``, averaged over the image's items (0 for an image without
        items). It asks the model to show *every* sensitive item in its map, not only the
        strongest one, which is what ``item_recall`` measures.

        Args:
            acts: Target-layer activations, ``(n, h, w, c)``.
            items: Item numbers per pixel at input resolution, ``(n, H, W)`` (0 = none).

        Example:
            >>> import numpy as np
            >>> from hardenkit.testkit import tiny_model
            >>> t = AdversarialTrainer(tiny_model(), eps=0.03, attention_weight=1.0, sensitive_indices=(1,))
            >>> x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
            >>> float(t.attention_loss(t._split.lo(x), np.zeros((2, 8, 8), np.float32)))
            0.0
        """
        cam = self._gradcam(acts)
        cam = cam / (tf.reduce_max(cam, axis=[1, 2], keepdims=True) + 1e-6)
        size = tf.shape(cam)[1:3]
        items = tf.cast(items, tf.float32)[..., None]
        short, count = tf.zeros(tf.shape(cam)[:1]), tf.zeros(tf.shape(cam)[:1])
        for k in range(1, MAX_ITEMS + 1):
            mk = tf.image.resize(tf.cast(tf.equal(items, float(k)), tf.float32), size, method="area")[..., 0] > 0
            present = tf.cast(tf.reduce_any(mk, axis=[1, 2]), tf.float32)
            peak = tf.reduce_max(tf.where(mk, cam, 0.0), axis=[1, 2])
            short += present * tf.nn.relu(self.attention_target - peak)
            count += present
        return tf.reduce_mean(short / tf.maximum(count, 1.0))

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        items: Any = None
        if x.shape[-1] == 4:  # images + item numbers (see item_channel)
            x, items = x[..., :3], x[..., 3]
        if sw is None:
            sw = tf.ones(tf.shape(y)[:1], tf.float32)
        if self.objective == "trades":
            return self._trades_step(x, y, sw)
        xa = self.adversarial_batch(x, y)
        k = tf.shape(x)[0] if self.clean_fraction >= 1 else \
            tf.cast(tf.round(self.clean_fraction * tf.cast(tf.shape(x)[0], tf.float32)), tf.int32)
        xx = tf.concat([x[:k], xa], axis=0)
        yy = tf.concat([y[:k], y], axis=0)
        ww = tf.concat([sw[:k], sw * self.adversarial_weight], axis=0)
        attend = self._split is not None and items is not None
        with tf.GradientTape() as tape:
            if attend:
                acts = self._split.lo(xx, training=True)
                pred = self._split.hi(acts, training=True)
            else:
                pred = self(xx, training=True)
            loss = self.compute_loss(x=xx, y=yy, y_pred=pred, sample_weight=ww, training=True)
            if attend:
                att = self.attention_loss(acts[:k], items[:k])
                self.attention_tracker.update_state(att)
                loss = loss + self.attention_weight * att
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.clean_tracker.update_state(y[:k], pred[:k])
        self.robust_tracker.update_state(y, pred[k:])
        return self._results(y[:k], pred[:k], sw[:k])

    def _trades_step(self, x: Any, y: Any, sw: Any) -> dict[str, Any]:
        """One TRADES update: CE(clean) + beta * KL(p(clean) || p(adversarial)), weighted per image."""
        target = tf.stop_gradient(self.inner(x, training=False))
        xa = self._attack(x, y, self.steps, self.step_size, target=target)
        n = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            pred = self(tf.concat([x, xa], axis=0), training=True)
            pc, pa = pred[:n], pred[n:]
            ce = keras.losses.sparse_categorical_crossentropy(y, pc)
            kl = keras.losses.kl_divergence(pc, pa)
            per = ce + self.trades_beta * self.adversarial_weight * kl
            loss = tf.reduce_sum(sw * per) / tf.cast(n, tf.float32) + tf.add_n(self.losses or [tf.zeros(())])
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.clean_tracker.update_state(y, pc)
        self.robust_tracker.update_state(y, pa)
        return self._results(y, pc, sw)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if x.shape[-1] == 4:
            x = x[..., :3]
        pred = self(x, training=False)
        self.loss_tracker.update_state(self.compute_loss(x=x, y=y, y_pred=pred, sample_weight=sw, training=False))
        xa = self._attack(x, y, self.eval_steps, 2.5 * self.eval_eps / self.eval_steps, eps=self.eval_eps)
        self.clean_tracker.update_state(y, pred)
        self.robust_tracker.update_state(y, self(xa, training=False))
        return self._results(y, pred, sw)

    def _results(self, y: Any, pred: Any, sw: Any) -> dict[str, Any]:
        out = dict(self.compute_metrics(None, y, pred, sample_weight=sw))
        clean = self.clean_tracker.result()
        robust = self.robust_tracker.result()
        score = tf.where(clean >= self.min_clean_accuracy, 0.5 * (clean + robust), clean - 1.0)
        out.update(loss=self.loss_tracker.result(), clean_accuracy=clean, robust_accuracy=robust, score=score)
        if self._split is not None:
            out["attention_loss"] = self.attention_tracker.result()
        return out


class EpsWarmup(keras.callbacks.Callback):
    """Ramp an :class:`AdversarialTrainer`'s training budget up over the first epochs of a fit.

    Epoch ``e`` (from 0) trains at ``min(1, (e + 1) / (epochs + 1))`` of ``eps``: with
    ``epochs=2``, a third, two thirds, then the full budget. Adversarial training from an
    undefended model at the full budget can collapse it to one class (the hardening loop's
    first round); starting small is the usual remedy. The scale is written to the epoch's
    logs as ``eps_scale`` and set back to 1 when the fit ends.

    Args:
        trainer: The :class:`AdversarialTrainer` being fit.
        epochs: Epochs below the full budget; 0 = none.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> t = AdversarialTrainer(tiny_model(), eps=0.03)
        >>> cb = EpsWarmup(t, epochs=2)
        >>> cb.on_epoch_begin(0); round(float(t.eps_scale.numpy()), 4)
        0.3333
        >>> cb.on_epoch_begin(5); float(t.eps_scale.numpy())
        1.0
    """

    def __init__(self, trainer: AdversarialTrainer, epochs: int) -> None:
        super().__init__()
        if epochs < 0:
            raise ValueError(f"expected epochs >= 0, got {epochs}")
        self.trainer = trainer
        self.epochs = int(epochs)

    def scale(self, epoch: int) -> float:
        """The budget's share at ``epoch`` (from 0).

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> EpsWarmup(AdversarialTrainer(tiny_model(), eps=0.03), 1).scale(0)
            0.5
        """
        return min(1.0, (epoch + 1) / (self.epochs + 1))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.trainer.eps_scale.assign(self.scale(epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["eps_scale"] = self.scale(epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.trainer.eps_scale.assign(1.0)


def fpr_at(scores: Any, y_binary: Any, threshold: float) -> float:
    """:func:`attacks.binary_metrics`' fpr at ``threshold``, 0 when there is no normal image.

    Example:
        >>> fpr_at([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], 0.5), fpr_at([0.9], [1], 0.5)
        (0.5, 0.0)
    """
    import math

    from attacks import binary_metrics

    fpr = binary_metrics(scores, y_binary, threshold)["fpr"]
    return 0.0 if math.isnan(fpr) else float(fpr)


def select_value(clean: float, robust: float, fpr: float, fpr_weight: float) -> float:
    """``(clean + robust + fpr_weight * (1 - fpr)) / (2 + fpr_weight)``: what picks a checkpoint.

    Example:
        >>> select_value(0.9, 0.6, 0.5, 1.0)
        0.6666666666666666
    """
    return (clean + robust + fpr_weight * (1 - fpr)) / (2 + fpr_weight)


class FprSelectionScore(keras.callbacks.Callback):
    """Add ``val_fpr`` and ``val_select`` to each epoch's logs, for the checkpoint to monitor.

    ``val_fpr`` is the false-positive rate on the validation images at the threshold that
    holds ``recall`` on them (the operating point ``harden`` reports). ``val_select`` is
    ``(clean + robust + fpr_weight * (1 - val_fpr)) / (2 + fpr_weight)``, from the epoch's
    ``val_clean_accuracy`` and ``val_robust_accuracy`` (:class:`AdversarialTrainer`; a plain
    classifier's ``val_accuracy`` counts as both), or ``clean - 1`` below ``min_clean_accuracy``.

    Args:
        classifier: The softmax classifier being trained (the trainer's ``inner``).
        x_val: Validation images; all of them are scored (one prediction pass per epoch).
        y_val_binary: 1 for sensitive, 0 for normal, per validation image.
        sensitive_indices: Output columns summed into the sensitive score.
        recall: The operating point's recall.
        fpr_weight: Weight of ``1 - val_fpr`` in ``val_select``.
        min_clean_accuracy: Below this clean accuracy an epoch is never the best. Defaults to 0.

    Example:
        >>> import numpy as np
        >>> from hardenkit.testkit import tiny_model
        >>> cb = FprSelectionScore(tiny_model(), np.zeros((4, 8, 8, 3), np.float32), np.array([0, 0, 1, 1]),
        ...                        (1,), recall=0.95, fpr_weight=1.0)
        >>> logs = {"val_clean_accuracy": 0.9, "val_robust_accuracy": 0.6}
        >>> cb.on_epoch_end(0, logs)
        >>> logs["val_fpr"], round(logs["val_select"], 4)  # equal scores: both normals flagged
        (1.0, 0.5)
    """

    def __init__(self, classifier: keras.Model, x_val: Any, y_val_binary: Any, sensitive_indices: Any,
                 recall: float, fpr_weight: float, min_clean_accuracy: float = 0.0) -> None:
        super().__init__()
        import numpy as np

        self.classifier = classifier
        self.x_val = x_val
        self.yb = np.asarray(y_val_binary).astype(bool)
        self.cols = list(sensitive_indices)
        self.recall = float(recall)
        self.fpr_weight = float(fpr_weight)
        self.min_clean = float(min_clean_accuracy)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from attacks import threshold_at_recall

        if logs is None:
            return
        probs = self.classifier.predict(self.x_val, batch_size=256, verbose=0)
        s = probs[:, self.cols].sum(axis=1)
        fpr = fpr_at(s, self.yb, threshold_at_recall(s, self.yb, self.recall))
        clean = float(logs.get("val_clean_accuracy", logs.get("val_accuracy", 0.0)))
        robust = float(logs.get("val_robust_accuracy", clean))
        logs["val_fpr"] = fpr
        logs["val_select"] = clean - 1.0 if clean < self.min_clean else select_value(clean, robust, fpr, self.fpr_weight)
