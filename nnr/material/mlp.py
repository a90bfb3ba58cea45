"""A small multilayer perceptron in numpy only (forward, backward, plain SGD), the model the
incremental test material is trained with. Not part of the codec.

Parameters are float32 arrays named and laid out as PyTorch would (`fc1.weight` is
(out_features, in_features)); training runs in float64 on a float64 copy, so a model's float32
state changes only where the federated simulation says so."""
import numpy as np


def init_params(sizes, rng) -> dict:
    """PyTorch's default Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        params[f"fc{i}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        params[f"fc{i}.bias"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return params


def _forward(params, x):
    """Activations of every layer (inputs to each Linear) and the logits."""
    n_layers = len(params) // 2
    acts = [x]
    h = x
    for i in range(1, n_layers + 1):
        z = h @ params[f"fc{i}.weight"].T + params[f"fc{i}.bias"]
        if i < n_layers:
            h = np.maximum(z, 0.0)
            acts.append(h)
        else:
            h = z
    return acts, h


def predict(params, x) -> np.ndarray:
    """Class indices for the rows of x."""
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    return np.argmax(_forward(p64, x)[1], axis=1)


def accuracy(params, x, y) -> float:
    return float(np.mean(predict(params, x) == y))


def loss_and_grads(params, x, y):
    """Mean softmax cross-entropy over the batch and its gradients (float64 params)."""
    n_layers = len(params) // 2
    acts, logits = _forward(params, x)
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    probs = e / e.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(-np.mean(np.log(probs[np.arange(n), y] + 1e-300)))
    delta = probs
    delta[np.arange(n), y] -= 1.0
    delta /= n
    grads = {}
    for i in range(n_layers, 0, -1):
        a = acts[i - 1]
        grads[f"fc{i}.weight"] = delta.T @ a
        grads[f"fc{i}.bias"] = delta.sum(axis=0)
        if i > 1:
            delta = (delta @ params[f"fc{i}.weight"]) * (a > 0)
    return loss, grads


def train_local(params, x, y, *, epochs, batch_size, lr, rng) -> dict:
    """`epochs` passes of minibatch SGD from `params` (float32) on (x, y); returns the float64
    trained parameters. The minibatch order comes from `rng` only."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    n = x.shape[0]
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            _, grads = loss_and_grads(p, x[idx], y[idx])
            for k in p:
                p[k] -= lr * grads[k]
    return p
