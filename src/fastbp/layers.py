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
"""
import numpy as np

from . import _core


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


class Dense(Layer):
    """Affine layer y = x W + b with W (I, O), b (O,).

    With ``activation`` set, the bias and activation are fused into the same
    pass after the GEMM (and the mask into the backward's bias-gradient pass).
    """

    def __init__(self, W, b, activation=None):
        self.W, self.b = W, b
        self.activation = activation
        self.dW = np.zeros_like(W)
        self.db = np.zeros_like(b)
        self.x = self.y = None

    @classmethod
    def init(cls, n_in, n_out, activation=None, dtype=np.float32, seed=0):
        """He-initialized (Xavier for sigmoid/tanh) weights, zero biases."""
        rng = np.random.default_rng(seed)
        std = np.sqrt(2.0 / n_in) if activation in (None, "relu") else \
            np.sqrt(2.0 / (n_in + n_out))
        W = (rng.standard_normal((n_in, n_out)) * std).astype(dtype)
        return cls(W, np.zeros(n_out, dtype), activation)

    @property
    def params(self):
        return {"W": self.W, "b": self.b}

    @property
    def grads(self):
        return {"W": self.dW, "b": self.db}

    def forward(self, x):
        self.x = x
        self.y = _core.dense_forward(x, self.W, self.b, self.activation)
        return self.y

    def backward(self, dout):
        dx, _, _ = _core.dense_backward(dout, self.x, self.W, self.y, self.activation,
                                        dW=self.dW, db=self.db)
        return dx


class _Activation(Layer):
    _fwd = _bwd = None

    def forward(self, x):
        self.y = type(self)._fwd(x)
        return self.y

    def backward(self, dout):
        return type(self)._bwd(dout, self.y)


class ReLU(_Activation):
    """y = max(x, 0); backward masks by y > 0 (gradient 0 at 0)."""
    _fwd = staticmethod(_core.relu_forward)
    _bwd = staticmethod(_core.relu_backward)


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward multiplies by y (1 - y)."""
    _fwd = staticmethod(_core.sigmoid_forward)
    _bwd = staticmethod(_core.sigmoid_backward)


class Tanh(_Activation):
    """y = tanh(x); backward multiplies by 1 - y^2."""
    _fwd = staticmethod(_core.tanh_forward)
    _bwd = staticmethod(_core.tanh_backward)


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


class Sequential:
    """Layers applied in order, with a loss layer last.

    ``forward(x)`` runs the layers, ``loss(x, t)`` adds the loss, ``backward()``
    runs the chain rule back through every layer, ``step(lr)`` applies SGD.
    """

    def __init__(self, *layers, loss=None):
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
