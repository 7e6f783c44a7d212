"""Layers in the textbook contract of backpropagation.

``forward`` returns the layer's output and keeps what backward needs;
``backward(dout)`` takes the upstream gradient, stores the parameter gradients
(``dW``, ``db``) and returns the gradient for the layer below. The math is
fastbp's compiled kernels; the nodes ``Add`` and ``Mul`` of a computational
graph take two inputs and return two gradients.

    >>> apple, count, tax = 100.0, 2.0, 1.1
    >>> mul_apple, mul_tax = Mul(), Mul()
    >>> price = mul_tax.forward(mul_apple.forward(apple, count), tax)
    >>> round(float(price), 6)
    220.0
    >>> dapple_price, dtax = mul_tax.backward(1.0)
    >>> dapple, dcount = mul_apple.backward(dapple_price)
    >>> round(float(dapple), 6), round(float(dcount), 6), round(float(dtax), 6)
    (2.2, 110.0, 200.0)

A network is layers in order and a loss; ``Dense(in_features, out_features)``
creates its own parameters, ``Dense(W, b)`` takes given ones:

    >>> net = Sequential(Dense(4, 8, "relu"), Dense(8, 3))
    >>> x = np.ones((2, 4), np.float32)
    >>> float(net.loss(x, np.array([0, 2]))) > 0
    True
    >>> net.backward().shape
    (2, 4)
    >>> net.step(0.1)
"""
import numbers

import numpy as np

from . import _core
from . import ops as _ops


class Layer:
    """Base class: a layer with no parameters."""

    params = {}

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    @property
    def grads(self):
        return {}


class Add:
    """z = x + y; dz/dx = dz/dy = 1."""

    def forward(self, x, y):
        return np.add(x, y)

    def backward(self, dout):
        return dout * 1, dout * 1


class Mul:
    """z = x * y; the gradient of each input is dout times the other input."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return np.multiply(x, y)

    def backward(self, dout):
        return np.multiply(dout, self.y), np.multiply(dout, self.x)


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _dtype_name(dt):
    return dt.name if dt.isnative else f"{dt.str} (non-native byte order)"


def _array_desc(a):
    return f"a {a.ndim}-D array of shape {a.shape}"


def _float_dtype(fn, dtype):
    """np.float32 or np.float64 from a dtype-like, TypeError otherwise."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        got = _dtype_name(dt) if dt is not None else repr(dtype)
        raise TypeError(f"{fn}: dtype must be float32 or float64, got {got}")
    return dt


def _dense_init(n_in, n_out, activation, dtype, seed):
    """Normal W with the activation's default init (fastbp.ops: He's std or
    Xavier's), zero b."""
    rng = np.random.default_rng(seed)
    init = _ops.activation("Dense", activation, allow_none=True).init
    std = np.sqrt(2.0 / n_in) if init == "he" else np.sqrt(2.0 / (n_in + n_out))
    W = (rng.standard_normal((n_in, n_out)) * std).astype(dtype)
    return W, np.zeros(n_out, dtype)


def _check_activation(fn, activation):
    if not (activation is None or (isinstance(activation, str)
                                   and activation in _ops.ACTIVATIONS)):
        names = ", ".join(repr(n) for n in _ops.ACTIVATIONS)
        raise ValueError(f"{fn}: activation must be one of None, {names}, got {activation!r}")


def _check_wb(fn, W, b):
    """W (I, O) and b (O,) checked; C-contiguous, aligned, writable copies
    where they are not already."""
    if W.ndim != 2:
        raise ValueError(f"{fn}: W must be a 2-D array (in_features, out_features), "
                         f"got {_array_desc(W)}")
    if 0 in W.shape:
        raise ValueError(f"{fn}: W must have at least one row and one column, "
                         f"got shape {W.shape}")
    if W.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: W must be float32 or float64, got {_dtype_name(W.dtype)}")
    O = W.shape[1]
    if b is None:
        b = np.zeros(O, W.dtype)
    else:
        if b.ndim != 1 or b.shape[0] != O:
            raise ValueError(f"{fn}: b must be a 1-D array of length {O} (W's columns), "
                             f"got {_array_desc(b)}")
        if b.dtype != W.dtype:
            raise TypeError(f"{fn}: b must have W's dtype {W.dtype.name}, "
                            f"got {_dtype_name(b.dtype)}")
    # the kernels and sgd_update's in-place update want C order: a copy the
    # layer owns where the given array is not (np.require returns it otherwise)
    return np.require(W, requirements="CAW"), np.require(b, requirements="CAW")


class Dense(Layer):
    """Affine layer y = x W + b with W (I, O), b (O,).

    Two ways to build one, told apart by the types of the first two arguments:

    ``Dense(in_features, out_features, activation=None, *, dtype=np.float32, seed=0)``
        two integers >= 1: the layer creates its parameters, W normal with
        He's std sqrt(2 / in) for relu/identity/None and Xavier's
        sqrt(2 / (in + out)) for sigmoid/tanh, b zero (as ``Dense.init``).
    ``Dense(W, b, activation=None)``
        two NumPy arrays: W 2-D float32 or float64 (I, O), b 1-D of W's dtype
        and length O. ``b=None`` gives a zero bias (of W's dtype, trained
        like any other); a layer without a bias is not supported.

    Anything else is refused at construction (TypeError/ValueError saying
    what was expected and what was given). ``activation`` is one of None,
    "identity" (both affine), "relu", "sigmoid", "tanh".

    The layer holds W and b as given when they are C-contiguous, aligned and
    writable: the caller and the layer then share them, and
    ``Sequential.step`` updates the caller's arrays in place. Otherwise (a
    Fortran-ordered or strided view, a read-only array) the layer keeps a
    C-contiguous copy, which it owns: the kernels and the in-place SGD need
    that layout, and the trained values are then in ``layer.W`` / ``layer.b``,
    not in the array passed in. The gradients ``dW``, ``db`` are C-contiguous
    buffers of the layer.

    With ``activation`` set, the bias and activation are fused into the same
    pass after the GEMM (and the mask into the backward's bias-gradient pass).
    """

    def __init__(self, W, b=None, activation=None, *, dtype=None, seed=None):
        fn = "Dense"
        if _is_int(W) and _is_int(b):
            for name, n in (("in_features", W), ("out_features", b)):
                if n < 1:
                    raise ValueError(f"{fn}: {name} must be >= 1, got {int(n)}")
            _check_activation(fn, activation)
            W, b = _dense_init(int(W), int(b), activation,
                               _float_dtype(fn, np.float32 if dtype is None else dtype),
                               0 if seed is None else seed)
        elif isinstance(W, np.ndarray) and (b is None or isinstance(b, np.ndarray)):
            if dtype is not None or seed is not None:
                raise TypeError(f"{fn}: dtype and seed are for Dense(in_features, "
                                "out_features); Dense(W, b) takes the arrays' own")
            W, b = _check_wb(fn, W, b)
            _check_activation(fn, activation)
        elif _is_int(W) and b is None:
            raise TypeError(f"{fn}: expected Dense(in_features, out_features), got "
                            f"in_features={int(W)} and no out_features")
        else:
            raise TypeError(f"{fn}: expected Dense(in_features, out_features) with two "
                            f"integers or Dense(W, b) with NumPy arrays, got "
                            f"({type(W).__name__}, {type(b).__name__})")
        self.W, self.b = W, b
        self.activation = activation
        self.dW = np.zeros(W.shape, W.dtype)
        self.db = np.zeros(b.shape, b.dtype)
        self.x = self.y = self.z = None

    @classmethod
    def init(cls, n_in, n_out, activation=None, dtype=np.float32, seed=0):
        """He-initialized (Xavier for sigmoid/tanh) weights, zero biases:
        ``Dense(n_in, n_out, activation, dtype=dtype, seed=seed)``."""
        return cls(n_in, n_out, activation, dtype=dtype, seed=seed)

    @property
    def params(self):
        return {"W": self.W, "b": self.b}

    @property
    def grads(self):
        return {"W": self.dW, "b": self.db}

    def forward(self, x):
        self.x = x
        if _ops.activation("Dense", self.activation, True).backward_input == "input":
            # its derivative needs the pre-activation: kept, then the activation
            self.z = _core.dense_forward(x, self.W, self.b, None)
            self.y = _core.activation_forward(self.activation, self.z)
        else:
            self.z = None
            self.y = _core.dense_forward(x, self.W, self.b, self.activation)
        return self.y

    def backward(self, dout):
        dx, _, _ = _core.dense_backward(dout, self.x, self.W,
                                        self.y if self.z is None else self.z,
                                        self.activation, dW=self.dW, db=self.db)
        return dx


class _Activation(Layer):
    """An activation layer: forward keeps what its backward takes (fastbp.ops
    backward_input: the output y, or the input x)."""
    _fwd = _bwd = None
    name = None

    def forward(self, x):
        self.y = self._fwd(x)
        self._bin = x if _ops.ACTIVATIONS[self.name].backward_input == "input" else self.y
        return self.y

    def backward(self, dout):
        return self._bwd(dout, self._bin)


class ReLU(_Activation):
    """y = max(x, 0); backward masks by y > 0 (gradient 0 at 0)."""
    name = "relu"
    _fwd = staticmethod(_core.relu_forward)
    _bwd = staticmethod(_core.relu_backward)


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward multiplies by y (1 - y)."""
    name = "sigmoid"
    _fwd = staticmethod(_core.sigmoid_forward)
    _bwd = staticmethod(_core.sigmoid_backward)


class Tanh(_Activation):
    """y = tanh(x); backward multiplies by 1 - y^2."""
    name = "tanh"
    _fwd = staticmethod(_core.tanh_forward)
    _bwd = staticmethod(_core.tanh_backward)


class GELU(_Activation):
    """y = x Phi(x) (approximate="none", PyTorch's default) or its tanh form
    (approximate="tanh"); backward from the input x."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.name = "gelu" if approximate == "none" else "gelu_tanh"

    def _fwd(self, x):
        return _core.gelu_forward(x, self.approximate)

    def _bwd(self, dout, x):
        return _core.gelu_backward(dout, x, self.approximate)


class SiLU(_Activation):
    """y = x sigmoid(x); backward from the input x."""
    name = "silu"
    _fwd = staticmethod(_core.silu_forward)
    _bwd = staticmethod(_core.silu_backward)


class SoftmaxCrossEntropy:
    """Softmax + cross-entropy: forward(x, t) returns the mean loss,
    backward() returns (softmax(x) - t) / N, computed in the forward pass."""

    def forward(self, x, t):
        self.loss, self.dx = _core.softmax_cross_entropy(x, t)
        return self.loss

    def backward(self, dout=1.0):
        return self.dx if dout == 1.0 else self.dx * dout


class MSELoss:
    """forward(y, t) = 0.5 * sum((y - t)^2) / N; backward() = (y - t) / N."""

    def forward(self, y, t):
        self.loss, self.dy = _core.mse_loss(y, t)
        return self.loss

    def backward(self, dout=1.0):
        return self.dy if dout == 1.0 else self.dy * dout


def _check_layer(fn, what, obj):
    """obj must be a layer instance: forward and backward callable."""
    if isinstance(obj, type):
        raise TypeError(f"{fn}: {what} is the class {obj.__name__}, not a layer; "
                        f"did you mean {obj.__name__}()?")
    if not (callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))):
        kind = "a loss layer" if what == "loss" else "a layer"
        raise TypeError(f"{fn}: {what} must be {kind} (an object with forward and backward), "
                        f"got {type(obj).__name__}")


class Sequential:
    """Layers applied in order, with a loss layer last.

    ``Sequential(layer0, layer1, ..., loss=None)`` or ``Sequential([layer0,
    layer1, ...], loss=None)`` (one list or tuple). A layer is any object with
    ``forward`` and ``backward``; anything else, a layer class instead of an
    instance, or a loss among the layers is refused at construction, naming
    its position (from 0). ``loss`` defaults to SoftmaxCrossEntropy().

    ``forward(x)`` runs the layers, ``loss(x, t)`` adds the loss, ``backward()``
    runs the chain rule back through every layer, ``step(lr)`` applies SGD.
    """

    def __init__(self, *layers, loss=None):
        fn = "Sequential"
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        for i, layer in enumerate(layers):
            if isinstance(layer, (SoftmaxCrossEntropy, MSELoss)):
                raise TypeError(f"{fn}: layer {i} is a loss ({type(layer).__name__}); "
                                "pass it as loss=")
            _check_layer(fn, f"layer {i}", layer)
        if loss is not None:
            _check_layer(fn, "loss", loss)
        self.layers = list(layers)
        self.loss_layer = loss if loss is not None else SoftmaxCrossEntropy()

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.loss_layer.forward(self.forward(x), t)

    def backward(self):
        d = self.loss_layer.backward()
        for layer in reversed(self.layers):
            d = layer.backward(d)
        return d

    def step(self, lr, weight_decay=0.0):
        """SGD on every Dense layer (weight decay on W only)."""
        for layer in self.layers:
            if isinstance(layer, Dense):
                _core.sgd_update(layer.W, layer.dW, lr, weight_decay)
                _core.sgd_update(layer.b, layer.db, lr)
