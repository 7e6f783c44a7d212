# Included by _core.pyx: array descriptions (Desc) and the checks made on them.

# ---- array descriptions ---------------------------------------------------------------------

DEF MAXDIM = 64

cdef struct Desc:
    char *ptr
    int ndim
    Py_ssize_t shape[MAXDIM]
    Py_ssize_t size
    int itemsize
    char kind          # NumPy's dtype kind: 'f', 'i', 'u', 'b', 'c', ...
    bint native        # native byte order
    bint contig        # C-contiguous and aligned
    bint writeable
    int device         # -1: host memory (NumPy), else the CUDA device
    void *stream       # the cudaStream_t work goes to (NULL: the legacy default)


cdef bint _is_device(object a):
    """Whether a is a CUDA array (CuPy, a PyTorch CUDA tensor, or anything with
    __cuda_array_interface__); host data of any kind is not."""
    if isinstance(a, np.ndarray):
        return False
    if type(a).__module__.startswith("torch"):
        return bool(getattr(a, "is_cuda", False))
    try:
        return hasattr(a, "__cuda_array_interface__")
    except Exception:
        return False


cdef int _describe(str fn, str name, object a, Desc *d) except -1:
    """Fill d from a's C-level description (an ndarray, or a CUDA array)."""
    cdef cnp.ndarray arr
    cdef int k
    if isinstance(a, np.ndarray):
        arr = <cnp.ndarray>a
        d.ndim = cnp.PyArray_NDIM(arr)
        d.size = 1
        for k in range(d.ndim):
            d.shape[k] = cnp.PyArray_DIM(arr, k)
            d.size *= d.shape[k]
        d.ptr = <char *>cnp.PyArray_DATA(arr)
        d.itemsize = cnp.PyArray_ITEMSIZE(arr)
        d.kind = (b'f' if cnp.PyArray_ISFLOAT(arr) else b'i' if cnp.PyArray_ISSIGNED(arr)
                  else b'u' if cnp.PyArray_ISUNSIGNED(arr) else b'b' if cnp.PyArray_ISBOOL(arr)
                  else b'c' if cnp.PyArray_ISCOMPLEX(arr) else b'O')[0]
        d.native = cnp.PyArray_ISNOTSWAPPED(arr)
        d.contig = cnp.PyArray_ISCARRAY_RO(arr)
        d.writeable = cnp.PyArray_ISWRITEABLE(arr)
        d.device = -1
        d.stream = NULL
        return 0
    ptr, shape, dtype, contig, readonly, dev, stream = _cuda().describe(fn, name, a)
    if len(shape) > MAXDIM:
        raise ValueError(f"{fn}: {name} has {len(shape)} dimensions, at most {MAXDIM} are supported")
    d.ndim = len(shape)
    d.size = 1
    for k in range(d.ndim):
        d.shape[k] = shape[k]
        d.size *= d.shape[k]
    d.ptr = <char *><uintptr_t>ptr
    d.itemsize = dtype.itemsize
    d.kind = ord(dtype.kind)
    d.native = dtype.isnative
    d.contig = contig
    d.writeable = not readonly
    d.device = dev
    d.stream = <void *><uintptr_t>stream
    return 0


cdef tuple _shape(const Desc *d):
    return tuple([d.shape[k] for k in range(d.ndim)])


cdef object _dtype(object a):
    """a's dtype, for messages."""
    return a.dtype if isinstance(a, np.ndarray) else _cuda().dtype_of(a)


cdef object _where(int dev):
    return "the host (NumPy)" if dev < 0 else f"CUDA device {dev}"


cdef object _float_view(str fn, str name, object a, Desc *d, int ndim=-1,
                        const Desc *like=NULL, object like_obj=None):
    """a described and checked as a float32/float64 array, not yet copied: the
    shape checks that follow come before any copy, so a huge broadcast view is
    refused instead of allocated. like: the other inputs (dtypes never mix)."""
    if not isinstance(a, np.ndarray) and not _is_device(a):
        a = np.asarray(a)
    _describe(fn, name, a, d)
    if d.kind != b'f' or (d.itemsize != 4 and d.itemsize != 8):
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got dtype {_dtype(a)}")
    if like != NULL and d.itemsize != like.itemsize:
        raise TypeError(
            f"{fn}: {name} has dtype {_dtype(a)} but the inputs are "
            f"{np.dtype(_dtype(like_obj)).newbyteorder('=')}; "
            "fastbp never casts silently, convert it with .astype()")
    if ndim >= 0 and d.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got {d.ndim}-D array of shape {_shape(d)}")
    return a


cdef object _contig(str fn, str name, object a, Desc *d):
    """a itself if the kernels can read it as is, else a C-contiguous, aligned,
    native copy (made on a's own device), described into d."""
    if d.contig and d.native:
        return a
    if d.device < 0:
        dt = a.dtype if a.dtype.isnative else a.dtype.newbyteorder("=")
        a = np.require(a, dt, ["C", "A"])
    else:
        if not d.native:
            raise TypeError(f"{fn}: {name} must be native-endian, got dtype {_dtype(a)}")
        a = _cuda().contiguous(fn, name, a)
    _describe(fn, name, a, d)
    return a


cdef object _float_input(str fn, str name, object a, Desc *d, int ndim=-1,
                         const Desc *like=NULL, object like_obj=None):
    return _contig(fn, name, _float_view(fn, name, a, d, ndim, like, like_obj), d)


cdef int _need_shape(str fn, str name, const Desc *d, tuple shape) except -1:
    if _shape(d) != shape:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {_shape(d)}")
    return 0


cdef object _out_buffer(str fn, str name, object out, Desc *d, tuple shape, const Desc *like,
                        object like_obj):
    """The caller's output buffer for an array of like's dtype and device (checked),
    or a new one (NumPy, or like's CUDA library)."""
    if out is None:
        if like.device < 0:
            out = np.empty(shape, np.float32 if like.itemsize == 4 else np.float64)
        else:
            out = _cuda().empty(fn, like_obj, shape, np.float32 if like.itemsize == 4 else np.float64)
        _describe(fn, name, out, d)
        return out
    if not isinstance(out, np.ndarray) and not _is_device(out):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    _describe(fn, name, out, d)
    if d.kind != b'f' or d.itemsize != like.itemsize or not d.native:
        raise TypeError(f"{fn}: {name} must have dtype "
                        f"{np.dtype(np.float32 if like.itemsize == 4 else np.float64)}, "
                        f"got {_dtype(out)}")
    _need_shape(fn, name, d, shape)
    _writable(fn, name, d)
    return out


cdef int _writable(str fn, str name, const Desc *d) except -1:
    if not d.contig:
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned to be written in place")
    if not d.writeable:
        raise ValueError(f"{fn}: {name} is read-only")
    return 0


cdef int _same_device(str fn, list names, list descs) except -1:
    """All the arrays on one device (the host, or one CUDA device); None skipped."""
    cdef Desc *d
    cdef Desc *d0 = NULL
    cdef int k
    for k in range(len(descs)):
        if descs[k] is None:
            continue
        d = <Desc *><uintptr_t>descs[k]
        if d0 == NULL:
            d0, n0 = d, names[k]
        elif d.device != d0.device:
            raise ValueError(f"{fn}: {names[k]} is on {_where(d.device)}, {n0} on {_where(d0.device)}")
    return 0


cdef inline object _dp(Desc *d):
    return <uintptr_t>d


cdef int _no_overlap(str fn, str out_name, const Desc *out, list names, list descs,
                     tuple allow_same=()) except -1:
    """out must not share memory with the inputs (all contiguous by now), except
    starting at the same address as one of allow_same (the in-place kernels)."""
    cdef Desc *a
    cdef Py_ssize_t na, no = out.size * out.itemsize
    cdef int k
    for k in range(len(descs)):
        if descs[k] is None:
            continue
        a = <Desc *><uintptr_t>descs[k]
        na = a.size * a.itemsize
        if na == 0 or no == 0 or a.device != out.device:
            continue
        if names[k] in allow_same and a.ptr == out.ptr and na == no:
            continue
        if out.ptr < a.ptr + na and a.ptr < out.ptr + no:
            raise ValueError(f"{fn}: {out_name} overlaps {names[k]} in memory")
    return 0


cdef int _check_blas_dims(str fn, list dims) except -1:
    for name, d in dims:
        if d > BLAS_INT_MAX:
            raise ValueError(
                f"{fn}: {name} = {d} exceeds the BLAS 32-bit dimension limit {BLAS_INT_MAX}")
    return 0


cdef double _real(str fn, str name, object v) except? -1.0:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


cdef object _labels(str fn, object target, Desc *d, Py_ssize_t N, int64_t C, str what):
    """Integer labels (N,) of any integer dtype, as a C-contiguous int64 array on
    their own device, range-checked by that device's kernels. what: the rows'
    name in messages ("logits", "x")."""
    cdef int64_t out[4]
    cdef const fbp_backend *be
    if not isinstance(target, np.ndarray) and not _is_device(target):
        target = np.asarray(target)
    _describe(fn, "target", target, d)
    if d.kind != b'i' and d.kind != b'u':
        what_ = "1-D targets must be integer class labels" if what == "logits" else \
            "labels must be integers"
        raise TypeError(f"{fn}: {what_}, got dtype {_dtype(target)}")
    if d.shape[0] != N:
        raise ValueError(f"{fn}: got {d.shape[0]} labels for {N} rows of {what}")
    orig = target
    if not (d.kind == b'i' and d.itemsize == 8 and d.contig and d.native):
        # uint64 above 2^63 wraps negative: caught by the range check
        if d.device < 0:
            target = np.require(target, np.int64, ["C", "A"])
        else:
            target = _cuda().as_int64(fn, "target", target)
        _describe(fn, "target", target, d)
    if N == 0:
        return target
    be = _backend(d.device)
    with nogil:
        rc = be.check_labels(d.device, d.stream, N, <int64_t *>d.ptr, C, out)
    _check(rc, be)
    if out[2] >= 0:  # the values as given (uint64 ones wrapped in the int64 copy)
        host = isinstance(orig, np.ndarray)
        if what == "logits":
            lo, hi = (int(orig.min()), int(orig.max())) if host else (out[0], out[1])
            raise ValueError(f"{fn}: labels must be in [0, {C}), got values in [{lo}, {hi}]")
        bad = int(orig[out[2]]) if host else out[3]
        raise ValueError(f"{fn}: labels must be in [0, {C}), got {bad} at index {out[2]}")
    return target
