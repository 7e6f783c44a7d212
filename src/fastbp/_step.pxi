# Included by _core.pyx: the MLP training step.

# ---- the MLP training step ----------------------------------------------------------------

def _grad_block(sizes, dt):
    """(block, dW, db): every layer's gradients as views of one zeroed block, so that
    a data-parallel step reduces them all with one Allreduce (fastbp.distributed).
    The last layer comes first: the backward pass finishes its gradients first, so
    the block fills front to back, the order in which a reduction overlapping the
    backward pass (PyTorch DDP's buckets) would send it. Each piece starts on a
    64-byte line, as a separate allocation would; the padding stays zero."""
    cdef Py_ssize_t A = 64 // dt.itemsize, n = 0, L = len(sizes) - 1, l
    offsets = [None] * L
    for l in range(L - 1, -1, -1):
        ow = n
        n += -(-sizes[l] * sizes[l + 1] // A) * A
        offsets[l] = (ow, n)
        n += -(-sizes[l + 1] // A) * A
    raw = np.zeros(n + A, dt)
    start = (-(raw.ctypes.data // dt.itemsize)) % A
    block = raw[start:start + n]
    dW = [block[ow:ow + sizes[l] * sizes[l + 1]].reshape(sizes[l], sizes[l + 1])
          for l, (ow, ob) in enumerate(offsets)]
    db = [block[ob:ob + sizes[l + 1]] for l, (ow, ob) in enumerate(offsets)]
    return block, dW, db


cdef inline bint _param_array(object a, bint host):
    """A NumPy array, or (host False: parameters copied to the GPU) a CUDA array."""
    return isinstance(a, np.ndarray) or (not host and _is_device(a))


def _check_mlp(str fn, W, b, activation, loss, cap, str backend, dict state=None):
    """An MLP's layers, checked in one place for the CPU workspace (MLPWorkspace)
    and the GPU's (fastbp.cuda.CudaMLP): one W and one b per layer; activation,
    one name for the hidden layers (the output layer is affine) or one per layer;
    loss; cap >= 1; W[l] (sizes[l], sizes[l+1]) and b[l] (sizes[l+1],) of one
    float dtype, within the BLAS's 32-bit dimensions. backend "cpu": the
    workspace steps on these very arrays, so they (and the optimizer state
    arrays in state, checked alike) must be writable NumPy arrays; "cuda_step":
    they are copied in, and may be NumPy or CUDA arrays. Returns (sizes, the
    activations' codes, dtype)."""
    cdef Py_ssize_t L = len(W), l
    cdef Desc d
    cdef bint host = backend == "cpu"
    if L < 1 or len(b) != L:
        raise ValueError(f"{fn}: need one W and one b per layer, got {len(W)} and {len(b)}")
    if isinstance(activation, (list, tuple)):
        if len(activation) != L:
            raise ValueError(f"{fn}: need one activation per layer ({L}), got {len(activation)}")
        acts = [_act_code(fn, a) for a in activation]
    else:
        acts = [_act_code(fn, activation)] * (L - 1) + [FBP_ACT_NONE]
    if loss not in LOSSES:
        raise ValueError(f"{fn}: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    if not host:
        _ops.BACKENDS[backend].require(
            fn, [("loss", loss)] + [("activation", ACT_NAMES[a]) for a in acts])
    cap = operator.index(cap)
    if cap < 1:
        raise ValueError(f"{fn}: cap must be >= 1, got {cap}")
    if not _param_array(W[0], host):
        raise TypeError(f"{fn}: parameters must be float32 or float64 arrays, "
                        f"got {type(W[0]).__name__}")
    _describe(fn, "W[0]", W[0], &d)
    if d.kind != b'f' or (d.itemsize != 4 and d.itemsize != 8) or d.ndim != 2:
        raise TypeError(f"{fn}: parameters must be 2-D float32 or float64 arrays, "
                        f"got {_dtype(W[0])} of {d.ndim} dimensions")
    dt = np.dtype(np.float32 if d.itemsize == 4 else np.float64)
    sizes = [d.shape[0], d.shape[1]]
    for l in range(1, L):
        if not _param_array(W[l], host):
            raise TypeError(f"{fn}: W[{l}] must be a {dt} array")
        _describe(fn, f"W[{l}]", W[l], &d)
        sizes.append(d.shape[d.ndim - 1] if d.ndim else -1)
    state = state or {}
    state_names = _ops.state_buffers(_ops.STATE_BUFFERS)
    for key in state:
        if key not in state_names:
            raise ValueError(f"{fn}: unknown optimizer state {key!r}; expected one of "
                             f"{state_names}")
    for l in range(L):
        wshape, bshape = (sizes[l], sizes[l + 1]), (sizes[l + 1],)
        for name, group in (("W", W), ("b", b)) + tuple(
                (k, state.get(k)) for k in state_names):
            shape = wshape if name.endswith("W") else bshape
            if group is None:
                continue
            a = group[l]
            if not _param_array(a, host):
                raise TypeError(f"{fn}: {name}[{l}] must be a {dt} array")
            _describe(fn, f"{name}[{l}]", a, &d)
            if d.kind != b'f' or d.itemsize != dt.itemsize or not d.native:
                raise TypeError(f"{fn}: {name}[{l}] must be a {dt} array")
            _need_shape(fn, f"{name}[{l}]", &d, shape)
            if host:
                _writable(fn, f"{name}[{l}]", &d)
    _check_blas_dims(fn, [("cap", cap)] + [(f"width {i}", s) for i, s in enumerate(sizes)])
    return sizes, acts, dt


cdef class MLPWorkspace:
    """Everything an MLP step writes besides the parameters, allocated once.

    Holds the layer outputs h[l] and their gradients dh[l] for batches of up to
    ``cap`` rows, the gradients dW[l], db[l] (views of one block, ``grad``: see
    _grad_block), dropout's hd[l] and masks, and the C
    pointer table over them and over the parameters and optimizer state it was
    built with; the arrays are kept referenced here so the pointers stay valid.
    ``buffers[name]`` is the list of a buffer's arrays by layer (names: BUFFERS;
    None for a buffer this workspace does not have). activation: one name for
    the hidden layers (the output layer is affine), or one per layer. state:
    {"vW": [...], "vb": [...], "sW": [...], "sb": [...]} the optimizer's state
    arrays (any of them absent or None). dropout: one rate in [0, 1) per layer
    (the output layer's 0), or None.
    """
    cdef fbp_mlp m
    cdef fbp_idx *sizes_c
    cdef int *act_c
    cdef double *drop_c
    cdef uint8_t **keep_c
    cdef void **table
    cdef Py_ssize_t *nbytes_c
    cdef readonly dict buffers
    cdef readonly list keep
    cdef readonly object xb, lb, tb, wb, grad
    cdef readonly tuple sizes, activations, dropout
    cdef readonly object dtype
    cdef readonly Py_ssize_t cap
    cdef readonly int loss_code, device
    cdef readonly str matmul_precision
    cdef list bf16_bufs
    cdef void **bf16_table

    def __cinit__(self, W, b, activation, loss, Py_ssize_t cap, state=None, dropout=None):
        fn = "MLPWorkspace"
        self.table = NULL
        self.nbytes_c = NULL
        self.sizes_c = NULL
        self.act_c = NULL
        self.drop_c = NULL
        self.keep_c = NULL
        self.bf16_table = NULL
        self.matmul_precision = "float32"
        self.device = -1
        cdef Py_ssize_t L = len(W), l
        state = dict(state or {})
        sizes, acts, dt = _check_mlp(fn, W, b, activation, loss, cap, "cpu", state)
        self.loss_code = LOSSES[loss]
        state_names = _ops.state_buffers(_ops.STATE_BUFFERS)
        if dropout is None:
            drops = [0.0] * L
        else:
            drops = [float(p) for p in dropout]
            if len(drops) != L or drops[L - 1] != 0.0 or not all(0.0 <= p < 1.0 for p in drops):
                raise ValueError(f"{fn}: dropout must be one rate in [0, 1) per layer, "
                                 f"the output layer's 0, got {dropout!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.activations = tuple(acts)
        self.dropout = tuple(drops)
        self.dtype = dt
        self.cap = cap
        self.grad, dW, db = _grad_block(sizes, dt)
        needs_z = [_ops.ACTIVATIONS[ACT_NAMES[a]].backward_input == "input" for a in acts]
        bufs = {"W": list(W), "b": list(b), "dW": dW, "db": db,
                "h": [np.zeros((cap, s), dt) for s in sizes[1:]],
                "dh": [np.zeros((cap, s), dt) for s in sizes[1:]],
                "hd": ([np.zeros((cap, sizes[l + 1]), dt) if drops[l] > 0 else None
                        for l in range(L)] if any(drops) else None),
                # the pre-activations, only for the layers whose activation's
                # derivative needs its input (the others take it from h)
                "z": ([np.zeros((cap, sizes[l + 1]), dt) if needs_z[l] else None
                       for l in range(L)] if any(needs_z) else None)}
        for key in state_names:
            bufs[key] = list(state[key]) if state.get(key) is not None else None
        self.buffers = bufs
        self.keep = [np.zeros((cap, sizes[l + 1]), np.uint8) if drops[l] > 0 else None
                     for l in range(L)]
        self.xb = np.zeros((cap, sizes[0]), dt)
        self.lb = np.zeros(cap, np.int64)
        self.tb = np.zeros((cap, sizes[L]), dt)
        self.wb = np.zeros(cap, dt)

        self.sizes_c = <fbp_idx *>calloc(L + 1, sizeof(fbp_idx))
        self.act_c = <int *>calloc(L, sizeof(int))
        self.drop_c = <double *>calloc(L, sizeof(double))
        self.keep_c = <uint8_t **>calloc(L, sizeof(uint8_t *))
        self.table = <void **>calloc(FBP_NBUF * L, sizeof(void *))
        self.nbytes_c = <Py_ssize_t *>calloc(FBP_NBUF * L, sizeof(Py_ssize_t))
        if (self.sizes_c == NULL or self.table == NULL or self.act_c == NULL or
                self.nbytes_c == NULL or
                self.drop_c == NULL or self.keep_c == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.sizes_c[l] = sizes[l]
        for l in range(L):
            self.act_c[l] = acts[l]
            self.drop_c[l] = drops[l]
            if self.keep[l] is not None:
                self.keep_c[l] = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>self.keep[l])
        cdef int k
        for k in range(FBP_NBUF):
            group = bufs[BUFFERS[k]]
            self.m.buf[k] = NULL if group is None else self.table + k * L
            for l in range(L):
                if group is not None and group[l] is not None:
                    self.table[k * L + l] = cnp.PyArray_DATA(<cnp.ndarray>group[l])
                    self.nbytes_c[k * L + l] = group[l].nbytes
        self.m.dsize = dt.itemsize
        self.m.L = <int>L
        self.m.sizes = self.sizes_c
        self.m.act = self.act_c
        self.m.loss = self.loss_code
        self.m.cap = cap
        self.m.drop = self.drop_c if any(drops) else NULL
        self.m.keep = self.keep_c
        self.m.xb = cnp.PyArray_DATA(<cnp.ndarray>self.xb)
        self.m.tb = cnp.PyArray_DATA(<cnp.ndarray>self.tb)
        self.m.wb = cnp.PyArray_DATA(<cnp.ndarray>self.wb)
        self.m.lb = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self.lb)

    def __dealloc__(self):
        free(self.table)
        free(self.nbytes_c)
        free(self.sizes_c)
        free(self.act_c)
        free(self.drop_c)
        free(self.keep_c)
        free(self.bf16_table)

    def set_matmul_precision(self, precision):
        """The products' precision from the next step on: "float32", or
        "bfloat16" (float32 workspaces): its bf16 buffers (csrc/fastbp.h's
        fbp_mlp.w16, a16, g16) are allocated on the first use and kept."""
        fn = "MLPWorkspace.set_matmul_precision"
        cdef int mm = _matmul_precision(fn, precision, self.dtype)
        cdef Py_ssize_t L = self.m.L, l
        if mm and self.bf16_table == NULL:
            s = self.sizes
            self.bf16_bufs = ([np.zeros(s[l] * s[l + 1], np.float32) for l in range(L)] +
                              [np.zeros(self.cap * s[l], np.float32) for l in range(L)] +
                              [np.zeros(self.cap * max(s[1:]), np.float32)])
            self.bf16_table = <void **>calloc(2 * L, sizeof(void *))
            if self.bf16_table == NULL:
                raise MemoryError()
            for l in range(2 * L):
                self.bf16_table[l] = cnp.PyArray_DATA(<cnp.ndarray>self.bf16_bufs[l])
            self.m.w16 = self.bf16_table
            self.m.a16 = self.bf16_table + L
            self.m.g16 = cnp.PyArray_DATA(<cnp.ndarray>self.bf16_bufs[2 * L])
        self.m.mm = mm
        self.matmul_precision = precision

    @property
    def has_momentum(self):
        return self.buffers["vW"] is not None

    def has_state(self, names):
        """Whether this workspace holds every optimizer state buffer in names."""
        return all(self.buffers[k] is not None for k in names)

    cdef int refuse_overlap(self, str fn, str name, const Desc *d) except -1:
        """A batch must not share memory with any buffer of the step (a parameter
        as x would be read after the step starts to update it)."""
        cdef Py_ssize_t nd = d.size * d.itemsize, i
        cdef char *p
        if nd == 0:
            return 0
        for i in range(FBP_NBUF * self.m.L):
            p = <char *>self.table[i]
            if p != NULL and d.ptr < p + self.nbytes_c[i] and p < d.ptr + nd:
                raise ValueError(f"{fn}: {name} overlaps the model's "
                                 f"{BUFFERS[i // self.m.L]}{i % self.m.L + 1} in memory; "
                                 "pass a copy")
        return 0

    def __getattr__(self, name):  # ws.W, ws.dW, ws.h, ...
        try:
            return self.buffers[name]
        except KeyError:
            raise AttributeError(name) from None


cdef class StepOptions:
    """The options of one kind of step (csrc/fbp_api.h's fbp_step_opts), kept by a
    model and updated in place (t, step, lr) from step to step.

    mode: STEP_*; optimizer: "SGD", "Adam" or "AdamW", with PyTorch's arguments
    (lr, momentum, dampening, nesterov, betas, eps, weight_decay on the weights
    only), or "sklearn_sgd", "sklearn_adam", scikit-learn's MLP solvers (lr,
    momentum, nesterov, betas, eps; fastbp.sklearn's); t: the optimizer's step
    (from 1); clip_norm, clip_value: 0 for none; seed, step, row0: the dropout
    key; norm: the total weight the loss is divided by (0: this batch's);
    count_correct; alpha: scikit-learn's L2 term, a weight decay of alpha over
    the batch's total weight (added to weight_decay); loss_eps: > 0 reports the
    log-losses with the probabilities clipped to [eps, 1 - eps], as
    scikit-learn's log_loss (the gradient is not clipped).
    """
    cdef fbp_step_opts o
    cdef readonly tuple need_state  # the workspace buffers its optimizer updates

    def __cinit__(self, int mode=FBP_MODE_TRAIN, optimizer="SGD", lr=0.0, weight_decay=0.0,
                  momentum=0.0, dampening=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8,
                  t=1, clip_norm=0.0, clip_value=0.0, seed=0, step=0, row0=0, norm=0.0,
                  count_correct=False, alpha=0.0, loss_eps=0.0, centered=False):
        fn = "StepOptions"
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"{fn}: unknown optimizer {optimizer!r}; expected one of "
                             f"{sorted(OPTIMIZERS)}")
        self.o.mode = mode
        self.o.optimizer = OPTIMIZERS[optimizer]
        self.o.lr = _real(fn, "lr", lr)
        self.o.weight_decay = _real(fn, "weight_decay", weight_decay)
        self.o.momentum = _real(fn, "momentum", momentum)
        self.o.dampening = _real(fn, "dampening", dampening)
        self.o.nesterov = bool(nesterov)
        self.o.centered = bool(centered)
        self.o.beta1 = _real(fn, "betas[0]", betas[0])
        self.o.beta2 = _real(fn, "betas[1]", betas[1])
        self.o.eps = _real(fn, "eps", eps)
        self.o.t = t
        self.o.clip_norm = _real(fn, "clip_norm", clip_norm)
        self.o.clip_value = _real(fn, "clip_value", clip_value)
        self.o.seed = seed
        self.o.step = step
        self.o.row0 = row0
        self.o.norm = _real(fn, "norm", norm)
        self.o.count_correct = bool(count_correct)
        self.o.alpha = _real(fn, "alpha", alpha)
        self.o.loss_eps = _real(fn, "loss_eps", loss_eps)
        if not 0.0 <= self.o.loss_eps < 0.5:
            raise ValueError(f"{fn}: loss_eps must be in [0, 0.5), got {loss_eps!r}")
        # what the step needs, decided once here (a step allocates nothing)
        self.need_state = _ops.state_buffers(_ops.OPTIMIZERS[optimizer].state(self.settings()))

    def settings(self):
        """The options an optimizer's registry entry reads (fastbp.ops)."""
        return {"momentum": self.o.momentum, "centered": bool(self.o.centered)}

    property mode:
        def __get__(self): return self.o.mode
        def __set__(self, int v): self.o.mode = v
    property optimizer:
        def __get__(self): return fbp_opt_name(self.o.optimizer).decode()
    property lr:
        def __get__(self): return self.o.lr
        def __set__(self, double v): self.o.lr = v
    property weight_decay:
        def __get__(self): return self.o.weight_decay
    property momentum:
        def __get__(self): return self.o.momentum
    property dampening:
        def __get__(self): return self.o.dampening
    property nesterov:
        def __get__(self): return bool(self.o.nesterov)
    property clip_norm:
        def __get__(self): return self.o.clip_norm
    property clip_value:
        def __get__(self): return self.o.clip_value
    property t:
        def __get__(self): return self.o.t
        def __set__(self, int64_t v): self.o.t = v
    property step:
        def __get__(self): return self.o.step
        def __set__(self, int64_t v): self.o.step = v
    property seed:
        def __get__(self): return self.o.seed
        def __set__(self, uint64_t v): self.o.seed = v
    property row0:
        def __get__(self): return self.o.row0
        def __set__(self, int64_t v): self.o.row0 = v
    property norm:
        def __get__(self): return self.o.norm
        def __set__(self, double v): self.o.norm = v
    property count_correct:
        def __get__(self): return bool(self.o.count_correct)
        def __set__(self, bint v): self.o.count_correct = v
    property alpha:
        def __get__(self): return self.o.alpha
        def __set__(self, double v): self.o.alpha = v
    property loss_eps:
        def __get__(self): return self.o.loss_eps


cdef int _step_target(str fn, object ws, int mode, Py_ssize_t N, object target, Desc *dt,
                      list keep, bint check_labels) except -1:
    """The step's labels (1 for labels in dt) or float targets (0), checked: ws
    is a CPU MLPWorkspace or a CUDA one (fastbp._cuda), with the same attributes."""
    cdef Py_ssize_t C = ws.sizes[len(ws.sizes) - 1]
    if mode == FBP_MODE_FORWARD or mode == FBP_MODE_UPDATE:
        return -2
    t = target if isinstance(target, np.ndarray) or _is_device(target) else np.asarray(target)
    tndim = t.ndim if isinstance(t, np.ndarray) else len(_cuda().describe(fn, "target", t)[1])
    if ws.loss_code == FBP_LOSS_XENT and tndim == 1:
        if check_labels:
            t = _labels(fn, t, dt, N, C, "x")
        else:
            _describe(fn, "target", t, dt)
            if dt.kind != b'i' and dt.kind != b'u':
                raise TypeError(f"{fn}: labels must be integers, got dtype {_dtype(t)}")
            if dt.shape[0] != N:
                raise ValueError(f"{fn}: got {dt.shape[0]} labels for {N} rows of x")
            if not (dt.kind == b'i' and dt.itemsize == 8 and dt.contig and dt.native):
                t = (np.require(t, np.int64, ["C", "A"]) if dt.device < 0
                     else _cuda().as_int64(fn, "target", t))
                _describe(fn, "target", t, dt)
        keep.append(t)
        return 1
    if tndim == 1 and C == 1:
        t = t.reshape(-1, 1)
    t = _float_view(fn, "target", t, dt)
    if dt.itemsize != ws.dtype.itemsize:
        raise TypeError(f"{fn}: target has dtype {_dtype(t)} but the inputs are {ws.dtype}; "
                        "fastbp never casts silently, convert it with .astype()")
    if _shape(dt) != (N, C):
        raise ValueError(f"{fn}: targets must have shape ({N}, {C}), got {_shape(dt)}")
    keep.append(_contig(fn, "target", t, dt))
    return 0


cdef object _sample_weight(str fn, object w, Desc *dw, Py_ssize_t N, object dtype,
                           bint need_weight):
    """Sample weights (N,) of the step's dtype, finite and >= 0, checked in place
    (no copy, so a step stays allocation-free); need_weight: their sum must be
    > 0 (a batch of its own; the batches of an epoch may weigh 0, mlp_epoch's
    caller checks the whole)."""
    w = _float_view(fn, "sample_weight", w, dw, 1)
    if dw.itemsize != dtype.itemsize:
        raise TypeError(f"{fn}: sample_weight has dtype {_dtype(w)} but the inputs are "
                        f"{dtype}; fastbp never casts silently, convert it with .astype()")
    if dw.shape[0] != N:
        raise ValueError(f"{fn}: got {dw.shape[0]} sample weights for {N} rows of x")
    w = _contig(fn, "sample_weight", w, dw)
    if dw.device >= 0:
        return w
    cdef Py_ssize_t i, n = dw.shape[0], bad = -1
    cdef double v, total = 0.0
    cdef bint f32 = dw.itemsize == 4
    with nogil:
        for i in range(n):
            v = (<const float *>dw.ptr)[i] if f32 else (<const double *>dw.ptr)[i]
            if not (v >= 0.0 and v - v == 0.0):  # NaN, negative or inf
                bad = i
                break
            total += v
    if bad >= 0:
        raise ValueError(f"{fn}: sample_weight must be finite and >= 0, got {w[bad]} at "
                         f"index {bad}")
    if need_weight and not total > 0.0:
        raise ValueError(f"{fn}: the sample weights sum to 0")
    return w


cdef int _gpu_unsupported(str fn, object ws, StepOptions opts, bint weighted) except -1:
    """What the step uses that the GPU step may lack (fastbp.ops.OPTIONS, the
    optimizer), in the order a refusal names the first: the GPU step answers
    what it runs, and refuses the rest by name rather than computing it
    differently."""
    cdef fbp_step_opts *o = &opts.o
    uses = []
    if o.mode == FBP_MODE_UPDATE:
        uses.append(("option", "update"))
    elif o.mode == FBP_MODE_BACKWARD:
        uses.append(("option", "backward"))
    uses.append(("optimizer", fbp_opt_name(o.optimizer).decode()))
    for used, option in ((o.nesterov, "nesterov"), (o.dampening != 0.0, "dampening"),
                         (o.clip_value > 0.0, "clip_value"), (o.norm > 0.0, "norm"),
                         (o.alpha != 0.0, "alpha"), (o.loss_eps > 0.0, "loss_eps"),
                         (weighted, "sample_weight")):
        if used:
            uses.append(("option", option))
    _ops.BACKENDS["cuda_step"].require(fn, uses)
    return 0


def mlp_step(ws, x, target, StepOptions opts not None, sample_weight=None, *,
             bint check_labels=True, bint sync=True, stream=None, bint check_only=False):
    """One native call: forward, loss, backward and (TRAIN) the update, as opts says.

    ws: an MLPWorkspace (CPU) or a fastbp._cuda.Workspace (GPU; x and target
    may then be NumPy or CUDA arrays, copied into its staging buffers). x (N, I)
    with 0 < N <= ws.cap; target: integer labels (N,) for softmax-xent (any
    integer dtype; range-checked unless check_labels=False), or float targets
    (N, outputs); sample_weight: (N,) or None. Mode UPDATE takes no x or target
    (pass None) and applies the optimizer to the gradients in ws.dW, ws.db; mode
    BACKWARD leaves the loss gradient there (all of it in ws.grad) and updates
    nothing.
    Returns (loss, reg, grad_norm, ncorrect): the data loss, 0.5 wd sum ||W||^2
    for coupled decay, the clipped gradient's norm (-1 unless clip_norm ran).
    GPU only: sync=False returns None at once (read_out() gives the result
    later), stream is a cudaStream_t as an int. A well-formed CPU call
    (C-contiguous x of the workspace dtype, int64 labels) allocates nothing.
    check_only=True: every check, then None without running anything (a
    data-parallel rank agrees with the others that all inputs are valid before
    the first collective call of the step). A TRAIN or UPDATE step advances
    opts.t and opts.step by one as it returns (see _advance).
    """
    fn = "mlp_step"
    cdef Desc dx, dt, dw
    cdef list keep = []
    cdef fbp_step_out out
    cdef MLPWorkspace cws
    cdef int rc, mode = opts.o.mode
    cdef Py_ssize_t I = ws.sizes[0], N = 0
    cdef const void *px = NULL
    cdef const void *pw = NULL
    if ws.device >= 0:
        _gpu_unsupported(fn, ws, opts, sample_weight is not None)
    if mode != FBP_MODE_UPDATE:
        x = _float_view(fn, "x", x, &dx, 2)
        if dx.itemsize != ws.dtype.itemsize:
            raise TypeError(f"{fn}: x has dtype {_dtype(x)} but the inputs are {ws.dtype}; "
                            "fastbp never casts silently, convert it with .astype()")
        if dx.shape[1] != I:
            raise ValueError(f"{fn}: x must have shape (N, {I}), got {_shape(&dx)}")
        N = dx.shape[0]
        if N > ws.cap:
            raise ValueError(f"{fn}: batch of {N} rows exceeds the workspace capacity {ws.cap}")
        if N == 0:
            raise ValueError(f"{fn}: empty batch")
        if ws.device < 0 and dx.device >= 0:
            raise ValueError(f"{fn}: x is on {_where(dx.device)}, the model on the host")
        if dx.device >= 0 and dx.device != ws.device:
            raise ValueError(f"{fn}: x is on {_where(dx.device)}, the model on {_where(ws.device)}")
        x = _contig(fn, "x", x, &dx)
        px = dx.ptr
    kind = _step_target(fn, ws, mode, N, target, &dt, keep, check_labels)
    if kind >= 0 and ws.device < 0 and dt.device >= 0:
        raise ValueError(f"{fn}: target is on {_where(dt.device)}, the model on the host")
    if sample_weight is not None and mode != FBP_MODE_FORWARD and mode != FBP_MODE_UPDATE:
        keep.append(_sample_weight(fn, sample_weight, &dw, N, ws.dtype, opts.o.norm <= 0.0))
        pw = dw.ptr
    cdef const int64_t *pl = <int64_t *>dt.ptr if kind == 1 else NULL
    cdef const void *pt = dt.ptr if kind == 0 else NULL
    if isinstance(ws, MLPWorkspace):
        cws = <MLPWorkspace>ws
        if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
            _check_state(fn, cws, opts)
        if mode != FBP_MODE_UPDATE:
            cws.refuse_overlap(fn, "x", &dx)
        if kind >= 0:
            cws.refuse_overlap(fn, "target", &dt)
        if pw != NULL:
            cws.refuse_overlap(fn, "sample_weight", &dw)
        if check_only:
            return None
        with nogil:
            rc = fbp_mlp_step(&cws.m, N, px, pl, pt, pw, &opts.o, &out)
        if cws.m.mm:
            _bf16_check()
        if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
            _advance(opts, 1)
        return out.loss, out.reg, out.grad_norm, out.ncorrect
    if check_only:
        return None
    s = <uintptr_t>dx.stream if stream is None and dx.device >= 0 else (stream or 0)
    r = ws.run(s, N, <uintptr_t>px, <uintptr_t>pl, <uintptr_t>pt, mode, opts.o.lr,
               opts.o.weight_decay, opts.o.clip_norm, opts.o.momentum,
               opts.o.count_correct, sync)
    if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
        _advance(opts, 1)
    return r


cdef inline void _advance(StepOptions opts, int64_t steps) noexcept:
    """Moves opts past `steps` training steps that have run (the optimizer's t and
    the model's step). Done here, before the call returns, because a Ctrl-C that
    arrives during the native call is raised as soon as the interpreter resumes,
    before the caller's next statement: a model that counted its steps itself
    would be left with parameters some steps ahead of its counters."""
    opts.o.t += steps
    opts.o.step += steps


cdef int _check_state(str fn, MLPWorkspace ws, StepOptions opts) except -1:
    """The workspace holds the state the optimizer updates (fastbp.ops says which)."""
    cdef fbp_step_opts *o = &opts.o
    if not ws.has_state(opts.need_state):
        raise ValueError(f"{fn}: the {fbp_opt_name(o.optimizer).decode()} step needs a "
                         f"workspace built with its state {opts.need_state}")
    return 0


def epoch_order(n, seed, epoch, rank=0):
    """The order (n,) int64 in which a fit visits its n rows in epoch ``epoch``
    (rank ``rank``'s rows in a data-parallel fit): a permutation of range(n),
    a function of (seed, epoch, rank) alone (csrc/fbp_rng.h; the NumPy twin is
    fastbp.reference.epoch_order). n < 2**32, seed < 2**64, epoch and rank
    >= 0."""
    fn = "epoch_order"
    cdef int64_t vals[4]
    for i, (name, v, hi) in enumerate((("n", n, 1 << 32), ("seed", seed, 1 << 64),
                                       ("epoch", epoch, 1 << 63), ("rank", rank, 1 << 63))):
        try:
            if isinstance(v, bool):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise TypeError(f"{fn}: {name} must be an integer, got {type(v).__name__}") from None
        if not 0 <= v < hi:
            raise ValueError(f"{fn}: {name} must be in [0, {hi}), got {v}")
        vals[i] = <int64_t>(<uint64_t>v)
    out = np.empty(vals[0], np.int64)
    cdef int64_t[::1] o = out
    with nogil:
        fbp_permutation(vals[0], fbp_order_key(<uint64_t>vals[1], vals[2], vals[3]),
                        &o[0] if vals[0] > 0 else NULL)
    return out


cdef int _check_permutation(str fn, const int64_t *p, Py_ssize_t n) except -1:
    """p (n,) holds every index of range(n) once: one pass, not a sort (a caller
    that splits an epoch into many calls pays it per call)."""
    cdef unsigned char *seen = <unsigned char *>calloc(n if n > 0 else 1, 1)
    cdef Py_ssize_t i
    cdef int64_t v
    cdef bint ok = True
    if seen == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            v = p[i]
            if v < 0 or v >= n or seen[v]:
                ok = False
                break
            seen[v] = 1
    free(seen)
    if not ok:
        raise ValueError(f"{fn}: order must be a permutation of range({n})")
    return 0


def mlp_epoch(MLPWorkspace ws, X, target, sample_weight, order, Py_ssize_t batch_size,
              Py_ssize_t first, Py_ssize_t last, StepOptions opts not None,
              double loss_sum=0.0, double weight_sum=0.0, losses=None):
    """Batches [first, last) of an epoch of training steps in one native call.

    X (n, I) of the workspace dtype; target int labels (n,) for softmax-xent or
    float targets (n, outputs); sample_weight (n,) or None; order (n,), a
    permutation of range(n); batch s holds rows order[s B : (s+1) B] (the last
    partial), gathered in C; opts.t and opts.step are the first batch's and
    advance by one per batch; opts is left past the last batch (t and step
    advanced by last - first, see _advance). Returns (loss_sum plus the sum of
    (loss + reg) times each batch's weight, weight_sum plus the weights' sum,
    the last grad_norm, ncorrect): running sums, which an epoch run in several
    calls passes on from call to call, so that its sums are added in one order
    however the calls split it. losses, a float64 array (last - first, 2),
    receives each batch's (loss, reg) if given. The CPU only.
    """
    fn = "mlp_epoch"
    cdef Desc dX, dt, do, dw, dl
    cdef list keep = []
    cdef fbp_epoch_out out
    X = _float_view(fn, "X", X, &dX, 2)
    if dX.device >= 0:
        raise ValueError(f"{fn}: X is on {_where(dX.device)}, the model on the host")
    if dX.itemsize != ws.dtype.itemsize:
        raise TypeError(f"{fn}: X has dtype {_dtype(X)} but the inputs are {ws.dtype}; "
                        "fastbp never casts silently, convert it with .astype()")
    cdef Py_ssize_t n = dX.shape[0]
    if dX.shape[1] != ws.sizes[0]:
        raise ValueError(f"{fn}: X must have shape (n, {ws.sizes[0]}), got {_shape(&dX)}")
    X = _contig(fn, "X", X, &dX)
    if not 1 <= batch_size <= ws.cap:
        raise ValueError(f"{fn}: batch_size must be in [1, {ws.cap}], got {batch_size}")
    cdef Py_ssize_t nbatches = (n + batch_size - 1) // batch_size
    if not 0 <= first <= last <= nbatches:
        raise ValueError(f"{fn}: batches [{first}, {last}) are not within the epoch's "
                         f"{nbatches} batches")
    _check_state(fn, ws, opts)
    order = np.asarray(order)
    if order.dtype.kind not in "iu" or order.shape != (n,):
        raise ValueError(f"{fn}: order must be integers of shape ({n},), got "
                         f"{order.dtype} {order.shape}")
    order = np.require(order, np.int64, ["C", "A"])
    _describe(fn, "order", order, &do)
    _check_permutation(fn, <const int64_t *>do.ptr, n)
    kind = _step_target(fn, ws, FBP_MODE_TRAIN, n, target, &dt, keep, True)
    if dt.device >= 0:
        raise ValueError(f"{fn}: target is on {_where(dt.device)}, the model on the host")
    cdef const void *pw = NULL
    if sample_weight is not None:
        keep.append(_sample_weight(fn, sample_weight, &dw, n, ws.dtype, False))
        ws.refuse_overlap(fn, "sample_weight", &dw)
        pw = dw.ptr
    cdef const int64_t *pl = <int64_t *>dt.ptr if kind == 1 else NULL
    cdef const void *pt = dt.ptr if kind == 0 else NULL
    ws.refuse_overlap(fn, "X", &dX)
    ws.refuse_overlap(fn, "target", &dt)
    cdef Py_ssize_t B = batch_size
    cdef fbp_step_opts o = opts.o
    o.mode = FBP_MODE_TRAIN
    out.loss_sum, out.weight_sum = loss_sum, weight_sum
    out.batches = NULL
    if losses is not None:
        _describe(fn, "losses", losses, &dl)
        if dl.device >= 0 or dl.kind != b'f' or dl.itemsize != 8 or not dl.native:
            raise TypeError(f"{fn}: losses must be a float64 NumPy array, got {_dtype(losses)}")
        _need_shape(fn, "losses", &dl, (last - first, 2))
        _writable(fn, "losses", &dl)
        _no_overlap(fn, "losses", &dl, ["X", "target", "order"], [_dp(&dX), _dp(&dt), _dp(&do)])
        if pw != NULL:
            _no_overlap(fn, "losses", &dl, ["sample_weight"], [_dp(&dw)])
        ws.refuse_overlap(fn, "losses", &dl)
        out.batches = <double *>dl.ptr
    with nogil:
        fbp_mlp_epoch(&ws.m, n, dX.ptr, pl, pt, pw, <int64_t *>do.ptr, B, first, last, &o, &out)
    if ws.m.mm:
        _bf16_check()
    _advance(opts, last - first)
    return out.loss_sum, out.weight_sum, out.grad_norm, out.ncorrect
