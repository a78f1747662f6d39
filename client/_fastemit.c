/* The compiled fast path of client.emit and client.cache_state.
 *
 * It handles the common call only: this thread already has a lane with a ring, the names
 * are exact str objects already interned in it, the ring has room, and every argument has
 * an exact built-in type with a value the record can hold. Anything else (first call in a
 * thread, a new name, an AIOperationType member, a full lane, a float subclass, a bad or
 * out-of-range argument, an unknown keyword) is handed, untouched, to the pure-Python
 * function the loader registered, which writes the same bytes and raises the same errors.
 *
 * The Python Lane object stays the owner of every piece of state (head, limit, the name
 * dicts, the mapping): this file reads its slots and writes its head, so the Python slow
 * paths see exactly what they would after a Python call.
 *
 * Nothing here calls back into Python code on the fast path: type checks are exact, dict
 * lookups use exact str keys (whose hash and comparison are C), and no object is created
 * or freed once the head int is reused (see store_count). So a Python signal handler, which
 * CPython runs only between bytecodes, can never run in the middle of a call; there is no
 * lock and no system call (clock_gettime(CLOCK_MONOTONIC) is answered by the vDSO on Linux).
 * docs/ring-format.md has the whole argument, and the memory-ordering one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifdef Py_GIL_DISABLED
/* Its correctness argument rests on the GIL (one thread runs the lane's owner at a time,
 * no object changes under us): refuse to load, and the pure-Python path is used. */
#error "ai_analytics.client._fastemit does not support free-threaded builds"
#endif

#ifndef __linux__
/* The record's ts_ns must be time.monotonic_ns()'s clock, which is CLOCK_MONOTONIC on Linux
 * (macOS's is mach_absolute_time); the lanes are a Linux design anyway. */
#error "ai_analytics.client._fastemit is built for Linux only"
#endif

#if PY_LITTLE_ENDIAN != 1
#error "the ring format is little-endian"
#endif

/* Layout constants, checked against client/_layout.py by configure(). */
#define RECORD_SIZE 64
#define OFF_HEAD 64
#define KIND_EXTENDED 1
#define KIND_CACHE_STATE 2
#define CACHE_ABSENT 2
#define TOKENS_ABSENT 0xFFFFFFFFu

/* What configure() registered: the Python implementations, the module globals that hold
 * the thread-local, and the Lane type whose slot offsets we read. */
static PyObject *py_emit = NULL;
static PyObject *py_cache_state = NULL;
static PyObject *emit_globals = NULL; /* _emit's module dict: "_local" is looked up per call */
static PyTypeObject *lane_type = NULL;
static PyTypeObject *watched_type = NULL; /* the thread-local type that reports its stores */
static PyObject *str_local = NULL, *str_lane = NULL, *str_value_ = NULL;
/* AIOperationType, whose members name an operation by their _value_ (NULL: not handled here) */
static PyTypeObject *operation_enum = NULL;
/* keyword names, compared by identity first (call sites pass interned constants) */
static PyObject *kw_operation, *kw_latency_ms, *kw_model, *kw_quality, *kw_success,
    *kw_cache_hit, *kw_ttft_ms, *kw_queue_ms, *kw_tokens_in, *kw_tokens_out, *kw_name,
    *kw_size, *kw_evictions;

/* Byte offsets of Lane's slots inside the instance. */
static Py_ssize_t off_head = -1, off_limit = -1, off_capacity = -1, off_base = -1,
                  off_ops = -1, off_models = -1, off_q = -1, off_dropped = -1,
                  off_no_ring = -1;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static const uint64_t NAN64_BITS = 0x7ff8000000000000ull; /* float("nan") */
static const uint32_t NAN32_BITS = 0x7fc00000u;            /* (float)float("nan") */

/* -- small helpers ---------------------------------------------------------------------- */

/* A non-negative exact int that fits 63 bits, read without raising; -1 otherwise. */
static inline int64_t
small_index(PyObject *o)
{
    if (o == NULL || !PyLong_CheckExact(o))
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0) {
        if (v == -1 && PyErr_Occurred())
            PyErr_Clear();
        return -1;
    }
    return (int64_t)v;
}

/* latency_ms / size: an exact float, or an exact int that converts exactly as struct's 'd'
 * does (PyFloat_AsDouble, correctly rounded); 0 when the value must go to Python. */
static inline int
as_double(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (PyLong_CheckExact(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return 0; /* huge ints: struct's own conversion decides, in Python */
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        /* |v| < 2**63: PyLong_AsDouble rounds to nearest, as this conversion does */
        *out = (double)v;
        return 1;
    }
    return 0;
}

/* quality / ttft_ms / queue_ms: None (NaN), or a number whose float32 cast does not
 * overflow (struct's 'f' raises, or not, by Python version there: let Python decide). */
static inline int
as_float32(PyObject *o, uint32_t *bits)
{
    if (o == NULL || o == Py_None) {
        *bits = NAN32_BITS;
        return 1;
    }
    double d;
    if (!as_double(o, &d))
        return 0;
    float f = (float)d;
    if (isinf(f) && !isinf(d))
        return 0;
    memcpy(bits, &f, 4);
    return 1;
}

/* tokens: None (absent) or an exact int in 0..0xFFFFFFFE */
static inline int
as_tokens(PyObject *o, uint32_t *out)
{
    if (o == NULL || o == Py_None) {
        *out = TOKENS_ABSENT;
        return 1;
    }
    int64_t v = small_index(o);
    if (v < 0 || v >= (int64_t)TOKENS_ABSENT)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static inline uint64_t
now_ns(void)
{
    /* time.monotonic_ns() is clock_gettime(CLOCK_MONOTONIC) on Linux */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The name's id in one of the lane's dicts; -1 when it is not there (or not an exact str,
 * whose hash could run Python code). */
static inline long
name_id(PyObject *ids, PyObject *name)
{
    if (!PyUnicode_CheckExact(name) || ids == NULL || !PyDict_CheckExact(ids))
        return -1;
    PyObject *v = PyDict_GetItemWithError(ids, name); /* borrowed */
    if (v == NULL) {
        if (PyErr_Occurred())
            PyErr_Clear();
        return -1;
    }
    int64_t id = small_index(v);
    return (id >= 0 && id <= 0xFFFF) ? (long)id : -1;
}

/* The plain str an operation argument names, borrowed: itself, or an AIOperationType
 * member's value. A member's attribute is read by the generic lookup, which runs no Python
 * code (configure checks that the type uses it); the member holds the value, and members
 * live as long as their class. NULL when it is neither (the Python path judges it). */
static inline PyObject *
operation_text(PyObject *operation)
{
    if (PyUnicode_CheckExact(operation))
        return operation;
    if (operation_enum == NULL || !Py_IS_TYPE(operation, operation_enum))
        return NULL;
    PyObject *value = PyObject_GetAttr(operation, str_value_);
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(value); /* still referenced by the member */
    return PyUnicode_CheckExact(value) ? value : NULL;
}

/* The thread's lane, cached. Reading it from the thread-local costs a third of a call, so
 * each OS thread keeps a borrowed pointer to its lane, valid while three things hold:
 *  - the same Python thread state (by its unique id: a thread state that is destroyed takes
 *    its thread-local dicts, and so its lane reference, with it, and a later one on the same
 *    OS thread has another id);
 *  - the same `_emit._local` object, to which this module holds a strong reference (so it
 *    cannot be freed, and its address reused, while it is cached);
 *  - no attribute of that thread-local set or deleted since, in any thread: its type routes
 *    __setattr__ and __delattr__ through local_setattr() below, which moves `epoch` before
 *    the store (the store can free the previous lane and run its __del__, and so a signal
 *    handler; by then the epoch has moved and the new lane is in place).
 * Under the GIL these are read and written by one thread at a time. */
static PyObject *cached_local = NULL;
static uint64_t epoch = 1;
static _Thread_local struct {
    uint64_t epoch;
    uint64_t thread_id;
    PyObject *lane; /* borrowed: the thread-local's reference keeps it alive */
} seen;

/* The calling thread's lane (a new reference), or NULL if it has none usable here. */
static inline PyObject *
thread_lane(void)
{
    PyObject *local = PyDict_GetItemWithError(emit_globals, str_local); /* borrowed */
    if (local == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (local != cached_local) { /* replaced (the fork handler does): forget every cache */
        epoch++;
        PyObject *old = cached_local;
        Py_INCREF(local);
        cached_local = local;
        Py_XDECREF(old);
        return NULL; /* the old one's lanes may have run code: take the Python path once */
    }
    /* cached only where every store to the thread-local goes through local_setattr() */
    int cacheable = watched_type != NULL && Py_TYPE(local) == watched_type;
    uint64_t thread_id = PyThreadState_GetID(PyThreadState_Get());
    if (cacheable && seen.epoch == epoch && seen.thread_id == thread_id && seen.lane != NULL) {
        Py_INCREF(seen.lane);
        return seen.lane;
    }
    PyObject *lane = PyObject_GetAttr(local, str_lane);
    if (lane == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (Py_TYPE(lane) != lane_type) { /* None, a stand-in or a lane without a ring */
        Py_DECREF(lane);
        return NULL;
    }
    if (cacheable) {
        seen.epoch = epoch;
        seen.thread_id = thread_id;
        seen.lane = lane;
    }
    return lane;
}

/* __setattr__ / __delattr__ of the thread-local type (see _emit._os_thread_local): move the
 * epoch, then store through the base type's own slot. */
static PyObject *
local_setattr(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "local_setattr(local, name[, value])");
        return NULL;
    }
    PyTypeObject *base = Py_TYPE(args[0])->tp_base;
    if (base == NULL || base->tp_setattro == NULL) {
        PyErr_SetString(PyExc_TypeError, "local_setattr: not a subclass of a thread-local");
        return NULL;
    }
    epoch++;
    if (base->tp_setattro(args[0], args[1], nargs == 3 ? args[2] : NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Where the ring's bytes are: lane.q is a memoryview over the whole mapping. */
static inline char *
lane_memory(PyObject *lane, Py_ssize_t *len)
{
    PyObject *q = SLOT(lane, off_q);
    if (q == NULL || !PyMemoryView_Check(q))
        return NULL;
    PyMemoryViewObject *mv = (PyMemoryViewObject *)q;
    if (mv->flags & _Py_MEMORYVIEW_RELEASED)
        return NULL;
    *len = mv->view.len;
    return (char *)mv->view.buf;
}

#if PY_VERSION_HEX >= 0x030C0000
/* one digit, positive, not immortal */
#define ONE_DIGIT(o) (((PyLongObject *)(o))->long_value.lv_tag == ((uintptr_t)1 << _PyLong_NON_SIZE_BITS))
#define DIGIT0(o) (((PyLongObject *)(o))->long_value.ob_digit[0])
#else
#define ONE_DIGIT(o) (Py_SIZE(o) == 1)
#define DIGIT0(o) (((PyLongObject *)(o))->ob_digit[0])
#endif

/* lane.<slot> = value (head, dropped). When the int in the slot is referenced by the slot
 * alone and one digit long, its value changes in place: nobody else can see that object,
 * and the fast path allocates nothing. Otherwise (the first laps, a Python frame that holds
 * it, a value past 2**30) a new int is made, exactly as `lane.head = h + 1` would. */
static inline int
store_count(PyObject *lane, Py_ssize_t off, uint64_t value)
{
    PyObject *old = SLOT(lane, off);
    if (old != NULL && Py_REFCNT(old) == 1 && PyLong_CheckExact(old) && ONE_DIGIT(old)
        && value > 256 && value < ((uint64_t)1 << PyLong_SHIFT)) {
        DIGIT0(old) = (digit)value;
        return 0;
    }
    PyObject *fresh = PyLong_FromUnsignedLongLong(value);
    if (fresh == NULL)
        return -1;
    SLOT(lane, off) = fresh;
    Py_XDECREF(old);
    return 0;
}

#define OFF_DROPPED 72
#define OFF_TAIL 128
#define FULL ((char *)1)

/* The cached tail says the lane is full (drop mode): read the daemon's tail, as
 * Lane.refresh_limit does. Still full: count the drop as _emit_full does (the arguments are
 * already known good) and return 1. Room after all: return 0, and the Python path writes
 * (leaving lane.limit for it to refresh, so that it takes its own once-a-lap path). */
static inline int
drop_if_still_full(PyObject *lane, char *mem, uint64_t head, uint64_t capacity)
{
    if (off_no_ring < 0 || SLOT(lane, off_no_ring) != Py_False)
        return 0;
    PyObject *dropped_o = SLOT(lane, off_dropped);
    int64_t dropped = small_index(dropped_o);
    if (dropped < 0)
        return 0;
    uint64_t tail = __atomic_load_n((uint64_t *)(mem + OFF_TAIL), __ATOMIC_ACQUIRE);
    uint64_t limit = tail + capacity;
    if (limit < tail || head < limit)
        return 0;
    PyObject *old = SLOT(lane, off_limit);
    if (PyLong_AsUnsignedLongLong(old) != limit) {
        PyObject *fresh = PyLong_FromUnsignedLongLong(limit);
        if (fresh == NULL)
            return -1;
        SLOT(lane, off_limit) = fresh;
        Py_DECREF(old);
    }
    if (store_count(lane, off_dropped, (uint64_t)dropped + 1) < 0)
        return -1;
    __atomic_store_n((uint64_t *)(mem + OFF_DROPPED), (uint64_t)dropped + 1, __ATOMIC_RELAXED);
    return 1;
}

/* Claim the next slot of a lane with room: its address, and the index in *h. NULL when
 * the Python path must run (an odd state, or room only after a fresh look at the tail);
 * FULL when the event was dropped and counted; NULL with an error set on failure. */
static inline char *
claim_slot(PyObject *lane, uint64_t *h, char **base_out)
{
    int64_t head = small_index(SLOT(lane, off_head));
    PyObject *limit_o = SLOT(lane, off_limit);
    if (head < 0 || limit_o == NULL || !PyLong_CheckExact(limit_o))
        return NULL;
    unsigned long long limit = PyLong_AsUnsignedLongLong(limit_o);
    if (limit == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    int64_t capacity = small_index(SLOT(lane, off_capacity));
    int64_t base = small_index(SLOT(lane, off_base));
    if (capacity <= 0 || base < 0)
        return NULL;
    Py_ssize_t len = 0;
    char *mem = lane_memory(lane, &len);
    if (mem == NULL)
        return NULL;
    uint64_t offset = (uint64_t)base + ((uint64_t)head % (uint64_t)capacity) * RECORD_SIZE;
    if (len < OFF_TAIL + 8 || offset + RECORD_SIZE > (uint64_t)len)
        return NULL;
    if ((uint64_t)head >= limit) {
        int dropped = drop_if_still_full(lane, mem, (uint64_t)head, (uint64_t)capacity);
        return dropped > 0 ? FULL : NULL;
    }
    *h = (uint64_t)head;
    *base_out = mem;
    return mem + offset;
}

/* claim_slot, then lane.head = h + 1 (the Python object; the shared head is published once
 * the record is written). The same answers as claim_slot, and NULL with an error set when
 * the new head cannot be stored. */
static inline char *
take_slot(PyObject *lane, uint64_t *h, char **base_out)
{
    char *slot = claim_slot(lane, h, base_out);
    if (slot != NULL && slot != FULL && store_count(lane, off_head, *h + 1) < 0)
        return NULL;
    return slot;
}

/* Publish: the record's stores become visible before the new head (a release store; on
 * x86-64 a plain store, on ARM64 stlr). */
static inline void
publish_head(char *mem, uint64_t head)
{
    __atomic_store_n((uint64_t *)(mem + OFF_HEAD), head, __ATOMIC_RELEASE);
}

static inline void
put_u64(char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void
put_u32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void
put_u16(char *p, uint16_t v) { memcpy(p, &v, 2); }

/* -- emit --------------------------------------------------------------------------------- */

static PyObject *
fallback(PyObject *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (func == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastemit.configure() has not been called");
        return NULL;
    }
    return PyObject_Vectorcall(func, args, (size_t)nargs, kwnames);
}

/* Put a vectorcall's arguments in parameter order into a[]: positional ones first,
 * then each keyword where keyword_at places it. 0 when the Python path must judge them
 * (too many positional, a keyword unknown, repeated or not interned). */
static inline int
gather_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **a,
            Py_ssize_t max_positional, int (*keyword_at)(PyObject *))
{
    if (nargs > max_positional)
        return 0;
    for (Py_ssize_t i = 0; i < nargs; i++)
        a[i] = args[i];
    if (kwnames == NULL)
        return 1;
    Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nk; i++) {
        int at = keyword_at(PyTuple_GET_ITEM(kwnames, i));
        if (at < 0 || a[at] != NULL)
            return 0;
        a[at] = args[nargs + i];
    }
    return 1;
}

/* The answer when take_slot gave no slot (NULL or FULL), the lane reference released:
 * False for a dropped event, NULL for an error, otherwise the Python path's answer. */
static PyObject *
not_taken(PyObject *lane, char *slot, PyObject *func, PyObject *const *args,
          Py_ssize_t nargs, PyObject *kwnames)
{
    Py_DECREF(lane);
    if (slot == FULL)
        Py_RETURN_FALSE;
    if (PyErr_Occurred())
        return NULL;
    return fallback(func, args, nargs, kwnames);
}

/* Publish a written record and answer True, the lane reference released. */
static inline PyObject *
published(PyObject *lane, char *mem, uint64_t h)
{
    publish_head(mem, h + 1);
    Py_DECREF(lane);
    Py_RETURN_TRUE;
}

/* The keyword's position among emit's parameters, -1 if unknown. */
static inline int
emit_keyword(PyObject *k)
{
    if (k == kw_quality) return 3;
    if (k == kw_model) return 2;
    if (k == kw_success) return 4;
    if (k == kw_cache_hit) return 5;
    if (k == kw_ttft_ms) return 6;
    if (k == kw_queue_ms) return 7;
    if (k == kw_tokens_in) return 8;
    if (k == kw_tokens_out) return 9;
    if (k == kw_latency_ms) return 1;
    if (k == kw_operation) return 0;
    return -1;
}

static PyObject *
fast_emit(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* operation, latency_ms, model, quality, success, cache_hit, ttft, queue, tin, tout */
    PyObject *a[10] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (lane_type == NULL || !gather_args(args, nargs, kwnames, a, 6, emit_keyword))
        goto slow;
    if (a[0] == NULL || a[1] == NULL)
        goto slow;

    double latency;
    uint32_t quality, ttft = NAN32_BITS, queue = NAN32_BITS, tin = TOKENS_ABSENT,
                      tout = TOKENS_ABSENT;
    uint8_t success = 1, cache_hit = CACHE_ABSENT;
    if (!as_double(a[1], &latency) || !as_float32(a[3], &quality))
        goto slow;
    if (a[4] != NULL) {
        if (a[4] == Py_True) success = 1;
        else if (a[4] == Py_False) success = 0;
        else goto slow;
    }
    if (a[5] != NULL && a[5] != Py_None) {
        if (a[5] == Py_True) cache_hit = 1;
        else if (a[5] == Py_False) cache_hit = 0;
        else goto slow;
    }
    int extended = 0;
    for (int i = 6; i < 10; i++)
        if (a[i] != NULL && a[i] != Py_None)
            extended = 1;
    if (extended && (!as_float32(a[6], &ttft) || !as_float32(a[7], &queue)
                     || !as_tokens(a[8], &tin) || !as_tokens(a[9], &tout)))
        goto slow;

    PyObject *lane = thread_lane();
    if (lane == NULL)
        goto slow;
    PyObject *operation = operation_text(a[0]);
    long op_id = operation == NULL ? -1 : name_id(SLOT(lane, off_ops), operation);
    long model_id = a[2] == NULL ? 0 : name_id(SLOT(lane, off_models), a[2]);
    if (op_id < 0 || model_id < 0)
        goto slow_lane;
    uint64_t h;
    char *mem;
    char *slot = take_slot(lane, &h, &mem);
    if (slot == NULL || slot == FULL)
        return not_taken(lane, slot, py_emit, args, nargs, kwnames);

    /* The same bytes as RECORD_BASIC ("QQdfHHBBx": 35 bytes, kind 0) or RECORD_EXTENDED
     * ("QQdfHHBBBxffII": 52 bytes); the rest of the slot is left as it was. */
    put_u64(slot + 0, h);
    put_u64(slot + 8, now_ns());
    memcpy(slot + 16, &latency, 8);
    put_u32(slot + 24, quality);
    put_u16(slot + 28, (uint16_t)op_id);
    put_u16(slot + 30, (uint16_t)model_id);
    slot[32] = (char)success;
    slot[33] = (char)cache_hit;
    if (!extended) {
        slot[34] = 0;
    }
    else {
        slot[34] = KIND_EXTENDED;
        slot[35] = 0;
        put_u32(slot + 36, ttft);
        put_u32(slot + 40, queue);
        put_u32(slot + 44, tin);
        put_u32(slot + 48, tout);
    }
    return published(lane, mem, h);

slow_lane:
    Py_DECREF(lane);
slow:
    return fallback(py_emit, args, nargs, kwnames);
}

/* -- cache_state -------------------------------------------------------------------------- */

/* The keyword's position among cache_state's parameters, -1 if unknown. */
static inline int
cache_state_keyword(PyObject *k)
{
    return k == kw_name ? 0 : k == kw_size ? 1 : k == kw_evictions ? 2 : -1;
}

static PyObject *
fast_cache_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3] = {NULL, NULL, NULL}; /* name, size, evictions */
    if (lane_type == NULL || !gather_args(args, nargs, kwnames, a, 3, cache_state_keyword))
        goto slow;
    if (a[0] == NULL)
        goto slow;
    double size;
    uint64_t size_bits = NAN64_BITS;
    if (a[1] != NULL && a[1] != Py_None) {
        if (!as_double(a[1], &size))
            goto slow;
        memcpy(&size_bits, &size, 8);
    }
    int64_t evictions = a[2] == NULL ? 0 : small_index(a[2]);
    if (evictions < 0 || evictions >= (int64_t)TOKENS_ABSENT)
        goto slow;

    PyObject *lane = thread_lane();
    if (lane == NULL)
        goto slow;
    long id = name_id(SLOT(lane, off_ops), a[0]);
    if (id < 0)
        goto slow_lane;
    uint64_t h;
    char *mem;
    char *slot = take_slot(lane, &h, &mem);
    if (slot == NULL || slot == FULL)
        return not_taken(lane, slot, py_cache_state, args, nargs, kwnames);
    /* RECORD_EXTENDED with kind KIND_CACHE_STATE, as _pack_cache_state writes it */
    put_u64(slot + 0, h);
    put_u64(slot + 8, now_ns());
    put_u64(slot + 16, size_bits);
    put_u32(slot + 24, NAN32_BITS);
    put_u16(slot + 28, (uint16_t)id);
    put_u16(slot + 30, 0);
    slot[32] = 1;
    slot[33] = CACHE_ABSENT;
    slot[34] = KIND_CACHE_STATE;
    slot[35] = 0;
    put_u32(slot + 36, NAN32_BITS);
    put_u32(slot + 40, NAN32_BITS);
    put_u32(slot + 44, (uint32_t)evictions);
    put_u32(slot + 48, 0);
    return published(lane, mem, h);

slow_lane:
    Py_DECREF(lane);
slow:
    return fallback(py_cache_state, args, nargs, kwnames);
}

/* -- the daemon's acquire read -------------------------------------------------------------- */

static PyObject *
load_acquire_u64(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_acquire_u64(buffer, byte_offset)");
        return NULL;
    }
    Py_ssize_t offset = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (offset < 0 || offset % 8 != 0 || offset + 8 > view.len || ((uintptr_t)view.buf % 8)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_IndexError, "byte_offset must be an aligned offset inside it");
        return NULL;
    }
    uint64_t v = __atomic_load_n((uint64_t *)((char *)view.buf + offset), __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(v);
}

/* The producer's other publications (a slow-path head, names_count, the magic) on CPUs
 * where a plain store does not order the stores before it. */
static PyObject *
store_release_u64(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store_release_u64(buffer, byte_offset, value)");
        return NULL;
    }
    Py_ssize_t offset = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long value = PyLong_AsUnsignedLongLong(args[2]);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (offset < 0 || offset % 8 != 0 || offset + 8 > view.len || ((uintptr_t)view.buf % 8)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_IndexError, "byte_offset must be an aligned offset inside it");
        return NULL;
    }
    __atomic_store_n((uint64_t *)((char *)view.buf + offset), (uint64_t)value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* -- configure ---------------------------------------------------------------------------- */

static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL)
        return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type == T_OBJECT_EX || m->type == T_OBJECT)
            off = m->offset;
    }
    Py_DECREF(descr);
    if (off < 0)
        PyErr_Format(PyExc_TypeError, "Lane.%s is not a __slots__ member", name);
    return off;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *emit_func, *cache_func, *globals, *type, *watched, *enum_type;
    int record_size, off_head_check;
    if (!PyArg_ParseTuple(args, "OOO!O!OO!ii", &emit_func, &cache_func, &PyDict_Type, &globals,
                          &PyType_Type, &type, &watched, &PyType_Type, &enum_type,
                          &record_size, &off_head_check))
        return NULL;
    if (watched != Py_None && !PyType_Check(watched)) {
        PyErr_SetString(PyExc_TypeError, "watched must be a type or None");
        return NULL;
    }
    if (record_size != RECORD_SIZE || off_head_check != OFF_HEAD) {
        PyErr_SetString(PyExc_ImportError, "_fastemit was built for another ring layout");
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)type;
    Py_ssize_t o[9];
    const char *names[9] = {"head", "limit", "capacity", "base", "ops", "models", "q",
                            "dropped", "no_ring"};
    for (int i = 0; i < 9; i++)
        if ((o[i] = slot_offset(t, names[i])) < 0)
            return NULL;
    off_head = o[0]; off_limit = o[1]; off_capacity = o[2]; off_base = o[3];
    off_ops = o[4]; off_models = o[5]; off_q = o[6]; off_dropped = o[7]; off_no_ring = o[8];
    Py_INCREF(emit_func); Py_XSETREF(py_emit, emit_func);
    Py_INCREF(cache_func); Py_XSETREF(py_cache_state, cache_func);
    Py_INCREF(globals); Py_XSETREF(emit_globals, globals);
    epoch++;
    Py_INCREF(type); Py_XSETREF(lane_type, t);
    Py_XINCREF(watched == Py_None ? NULL : watched);
    Py_XSETREF(watched_type, watched == Py_None ? NULL : (PyTypeObject *)watched);
    /* Members are read here only through the generic attribute lookup. */
    PyTypeObject *members = (PyTypeObject *)enum_type;
    int generic = members->tp_getattro == PyObject_GenericGetAttr;
    Py_XINCREF(generic ? enum_type : NULL);
    Py_XSETREF(operation_enum, generic ? members : NULL);
    Py_RETURN_NONE;
}

static int
intern_all(void)
{
#define I(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    I(str_local, "_local"); I(str_lane, "lane"); I(str_value_, "_value_");
    I(kw_operation, "operation"); I(kw_latency_ms, "latency_ms"); I(kw_model, "model");
    I(kw_quality, "quality"); I(kw_success, "success"); I(kw_cache_hit, "cache_hit");
    I(kw_ttft_ms, "ttft_ms"); I(kw_queue_ms, "queue_ms"); I(kw_tokens_in, "tokens_in");
    I(kw_tokens_out, "tokens_out"); I(kw_name, "name"); I(kw_size, "size");
    I(kw_evictions, "evictions");
#undef I
    return 0;
}

PyDoc_STRVAR(emit_doc,
"emit($module, operation, latency_ms, model='', quality=None, success=True, cache_hit=None, *, ttft_ms=None, queue_ms=None, tokens_in=None, tokens_out=None)\n--\n\n"
"Record one inference event without blocking; return False if it was dropped.\n\n"
"The compiled fast path of ai_analytics.client.emit: every call it does not handle goes\n"
"to the pure-Python emit, which has the full description.");

PyDoc_STRVAR(cache_state_doc,
"cache_state($module, name, size=None, evictions=0)\n--\n\n"
"Report a cache's state (the compiled fast path of ai_analytics.client.cache_state).");

static PyMethodDef methods[] = {
    {"emit", (PyCFunction)(void (*)(void))fast_emit, METH_FASTCALL | METH_KEYWORDS, emit_doc},
    {"cache_state", (PyCFunction)(void (*)(void))fast_cache_state,
     METH_FASTCALL | METH_KEYWORDS, cache_state_doc},
    {"load_acquire_u64", (PyCFunction)(void (*)(void))load_acquire_u64, METH_FASTCALL,
     "load_acquire_u64($module, buffer, byte_offset, /)\n--\n\n"
     "Read the aligned little-endian u64 at byte_offset with acquire ordering."},
    {"store_release_u64", (PyCFunction)(void (*)(void))store_release_u64, METH_FASTCALL,
     "store_release_u64($module, buffer, byte_offset, value, /)\n--\n\n"
     "Store value as the aligned little-endian u64 at byte_offset with release ordering."},
    {"local_setattr", (PyCFunction)(void (*)(void))local_setattr, METH_FASTCALL,
     "local_setattr($module, local, name, value=<delete>, /)\n--\n\n"
     "Set (or delete) an attribute of the client's thread-local, invalidating cached lanes."},
    {"configure", configure, METH_VARARGS,
     "configure(emit, cache_state, emit_globals, lane_type, watched_local_type,"
     " operation_enum, record_size, off_head)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "ai_analytics.client._fastemit",
    "The compiled fast path of ai_analytics.client.emit and cache_state.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastemit(void)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        /* its state is per process, and thread ids are per interpreter */
        PyErr_SetString(PyExc_ImportError, "_fastemit loads in the main interpreter only");
        return NULL;
    }
    if (intern_all() < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
