/* mappedpages._views: page handles and the read path in C, for the C core.
 *
 * A page handle is built each time a stored page number comes back, and get_page runs once per
 * page a reader touches: in Python, the checks around the memoryview slice cost several times
 * the slice. Here the common case runs in C without leaving the GIL:
 *
 * - PageIdBase and ProtectedPageIdBase are the tuples (index, page_size, kind) that PageId and
 *   ProtectedPageId (handles.py) derive from. An exact int index and a valid page size are
 *   taken at once; anything else goes to the checker handles.py registers, whose exceptions
 *   are the contract.
 * - Views is the base of every reader (reader.py): it holds the attributes the Python layer
 *   keeps for the views (_n, _ps, _ro, _rw, _kind) and answers get_page for a PageId of its
 *   page size below _n, on a page the core says is not internal. The core is asked without
 *   waiting (mp_kind_try, mp_snap_kind_try, given as an address by the cffi layer): a thread
 *   that holds the GIL must not wait for another thread's batch, which needs the GIL to end.
 *   Whatever the quick path cannot answer goes to the Python method that explains it
 *   (_get_page, _get_page_mut), so that the errors and the waiting are those of one place.
 *   WritableViews adds get_page_mut, for the Pager.
 *
 * Closing, forking and shrinking set _n to 0 before the core changes, under the GIL: the quick
 * path then never reaches the core. Only the stable ABI is used, as in crc32c_module.c. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* The stable ABI's type slots pass functions as void * (PyType_Slot, PyType_GetSlot), which
 * ISO C does not define; every POSIX system does, so -Wpedantic's warning is waived for it. */
#pragma GCC diagnostic ignored "-Wpedantic"

enum { KIND_PAGE = 0, KIND_PROTECTED = 1 };
enum { FIRST_DATA_PAGE = 3, KIND_INTERNAL = 2 };
#define MIN_PAGE_SIZE 1024L
#define MAX_PAGE_SIZE (1L << 28)

/* ---- handles ------------------------------------------------------------------------------ */

static PyTypeObject *page_base, *protected_base; /* the C bases */
static PyTypeObject *page_id_type;               /* PageId itself, for the exact check */
static PyObject *checker;                        /* (index, page_size) -> (index, page_size) */
static PyObject *kind_tags[2];

static PyObject *make_handle(PyTypeObject *type, PyObject *index, PyObject *page_size, int kind) {
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    PyObject *t = alloc(type, 3);
    if (!t) return NULL;
    Py_INCREF(index);
    Py_INCREF(page_size);
    Py_INCREF(kind_tags[kind]);
    PyTuple_SetItem(t, 0, index); /* each steals the reference; t is new, so none fails */
    PyTuple_SetItem(t, 1, page_size);
    PyTuple_SetItem(t, 2, kind_tags[kind]);
    return t;
}

static int valid_page_size(long ps) { return ps >= MIN_PAGE_SIZE && ps <= MAX_PAGE_SIZE && !(ps & (ps - 1)); }

/* An exact int in 0 .. 2**64-1 and an exact int page size: no call into Python. */
static int quick_args(PyObject *index, PyObject *page_size) {
    if (!PyLong_CheckExact(index) || !PyLong_CheckExact(page_size)) return 0;
    PyLong_AsUnsignedLongLong(index);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    long ps = PyLong_AsLong(page_size);
    if (ps == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return valid_page_size(ps);
}

static PyObject *handle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs, int kind) {
    if (!kwargs && PyTuple_Size(args) == 2) {
        PyObject *index = PyTuple_GetItem(args, 0), *page_size = PyTuple_GetItem(args, 1);
        if (quick_args(index, page_size)) return make_handle(type, index, page_size, kind);
    }
    if (!checker) {
        PyErr_SetString(PyExc_RuntimeError, "mappedpages._views has no handle checker registered");
        return NULL;
    }
    PyObject *checked = PyObject_Call(checker, args, kwargs), *r = NULL;
    if (!checked) return NULL;
    if (PyTuple_Check(checked) && PyTuple_Size(checked) == 2)
        r = make_handle(type, PyTuple_GetItem(checked, 0), PyTuple_GetItem(checked, 1), kind);
    else
        PyErr_SetString(PyExc_TypeError, "the handle checker must return (index, page_size)");
    Py_DECREF(checked);
    return r;
}

static PyObject *page_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    return handle_new(type, args, kwargs, KIND_PAGE);
}

static PyObject *protected_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    return handle_new(type, args, kwargs, KIND_PROTECTED);
}

/* tuple's deallocation, then the reference every instance of a heap type holds to it */
static void handle_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    destructor base = (destructor)PyType_GetSlot(&PyTuple_Type, Py_tp_dealloc);
    base(self);
    Py_DECREF(type);
}

static PyType_Slot page_slots[] = {
    {Py_tp_new, (void *)page_new},
    {Py_tp_dealloc, (void *)handle_dealloc},
    {Py_tp_doc, "The tuple (index, page_size, 0) a PageId is."},
    {0, NULL},
};
static PyType_Slot protected_slots[] = {
    {Py_tp_new, (void *)protected_new},
    {Py_tp_dealloc, (void *)handle_dealloc},
    {Py_tp_doc, "The tuple (index, page_size, 1) a ProtectedPageId is."},
    {0, NULL},
};
static PyType_Spec page_spec = {"mappedpages._views.PageIdBase", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
                                page_slots};
static PyType_Spec protected_spec = {"mappedpages._views.ProtectedPageIdBase", 0, 0,
                                     Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, protected_slots};

/* The kind of handle class cls makes, or -1 with a TypeError. */
static int handle_kind(PyObject *cls, PyObject *page_size, const char *call) {
    if (PyType_Check(cls) && PyLong_CheckExact(page_size)) {
        if (PyType_IsSubtype((PyTypeObject *)cls, page_base)) return KIND_PAGE;
        if (PyType_IsSubtype((PyTypeObject *)cls, protected_base)) return KIND_PROTECTED;
    }
    PyErr_Format(PyExc_TypeError, "%s: a handle class and an int page size", call);
    return -1;
}

/* new_handle(cls, index, page_size): a handle for a page number from a core, without the
 * checks (the core made them). */
static PyObject *new_handle(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    int kind = nargs == 3 ? handle_kind(args[0], args[2], "new_handle") : -1;
    if (kind < 0 || !PyLong_CheckExact(args[1])) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "new_handle(cls, index, page_size)");
        return NULL;
    }
    return make_handle((PyTypeObject *)args[0], args[1], args[2], kind);
}

/* new_handles(cls, indices, page_size): new_handle for each of indices, as a list. */
static PyObject *new_handles(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    int kind = nargs == 3 ? handle_kind(args[0], args[2], "new_handles") : -1;
    if (kind < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "new_handles(cls, indices, page_size)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *out = PyList_New(0), *it = PyObject_GetIter(args[1]), *index;
    if (!out || !it) goto fail;
    while ((index = PyIter_Next(it))) {
        PyObject *h = PyLong_CheckExact(index) ? make_handle(type, index, args[2], kind) : NULL;
        if (!h && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "new_handles: an index is not an int");
        Py_DECREF(index);
        if (!h || PyList_Append(out, h) < 0) {
            Py_XDECREF(h);
            goto fail;
        }
        Py_DECREF(h);
    }
    if (PyErr_Occurred()) goto fail;
    Py_DECREF(it);
    return out;
fail:
    Py_XDECREF(it);
    Py_XDECREF(out);
    return NULL;
}

/* ---- views -------------------------------------------------------------------------------- */

typedef int (*kind_fn)(void *core, uint64_t page);

typedef struct {
    PyObject_HEAD
    unsigned long long n; /* _n: a page count no larger than the core's */
    Py_ssize_t ps;        /* _ps */
    PyObject *ro, *rw;    /* _ro, _rw: the mapping's views */
    PyObject *kind;       /* _kind: the core's kind(), for the pure core */
    kind_fn fast_kind;    /* the C core's kind without waiting, and its argument */
    void *fast_core;
    PyObject *fast_owner; /* keeps fast_core's memory alive */
    int watch;            /* _watch: get_page_mut always takes the slow path (the Pager then
                             sees each writable view: sealed pages, pager.py) */
    kind_fn fast_view, fast_write; /* the C core's kind for a page about to be written through
                             a view, or by write_page: negative also when its record must be
                             retired first (mp_view_try, mp_write_try); mp_view_try also keeps
                             a page the open batch allocated from being sealed */
    int write_fd;         /* _write_fd: the file write_page writes, 0 or -1: none */
} Views;

static PyObject *slow_names[3]; /* "_get_page", "_get_page_mut", "_write_page" */

/* The kind of page `index` if it can be had now: negative otherwise (the slow path asks). */
static int quick_kind(Views *self, PyObject *index_obj, uint64_t index) {
    if (self->fast_kind) return self->fast_kind(self->fast_core, index);
    if (!self->kind) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(self->kind, index_obj, NULL);
    if (!r) {
        PyErr_Clear();
        return -1;
    }
    long k = PyLong_Check(r) ? PyLong_AsLong(r) : -1;
    Py_DECREF(r);
    if (k == -1 && PyErr_Occurred()) PyErr_Clear();
    return k < 0 || k > 3 ? -1 : (int)k;
}

/* The index of the page pid names if the quick path answers for it (a PageId of this page
 * size below _n, not internal, inside mv), or -1. */
static long long quick_index(Views *self, PyObject *pid, PyObject *mv, int mode) {
    if (Py_TYPE(pid) != page_id_type || !mv) return -1;
    PyObject *index_obj = PyTuple_GetItem(pid, 0), *ps_obj = PyTuple_GetItem(pid, 1);
    if (!index_obj || !ps_obj) return -1;
    if (PyLong_AsSsize_t(ps_obj) != self->ps) return -1;
    unsigned long long index = PyLong_AsUnsignedLongLong(index_obj);
    if (PyErr_Occurred() || index < FIRST_DATA_PAGE || index >= self->n) return -1;
    if (index >= (unsigned long long)(PY_SSIZE_T_MAX / self->ps)) return -1;
    kind_fn fn = mode == 2 ? self->fast_write : mode == 1 ? self->fast_view : NULL;
    if ((fn || mode == 2) && !(fn && self->fast_core)) return -1;
    int kind = fn ? fn(self->fast_core, index) : quick_kind(self, index_obj, index);
    if (kind < 0 || kind == KIND_INTERNAL) return -1;
    return (long long)index;
}

static PyObject *view(Views *self, PyObject *pid, int writable) {
    PyObject *mv = writable ? self->rw : self->ro;
    if (writable && self->watch) goto slow;
    long long index = quick_index(self, pid, mv, writable);
    if (index < 0) goto slow;
    /* the pure core's kind() is Python code, which lets other threads run (a remap, a close):
     * the views are read again, and held while sliced */
    mv = writable ? self->rw : self->ro;
    if (!mv || (unsigned long long)index >= self->n) goto slow;
    Py_INCREF(mv);
    Py_ssize_t start = (Py_ssize_t)index * self->ps, len = PyObject_Length(mv);
    PyObject *page = len >= 0 && start <= len - self->ps ? PySequence_GetSlice(mv, start, start + self->ps) : NULL;
    Py_DECREF(mv);
    if (page) return page;
slow:
    PyErr_Clear();
    return PyObject_CallMethodObjArgs((PyObject *)self, slow_names[writable], pid, NULL);
}

static PyObject *get_page(PyObject *self, PyObject *pid) { return view((Views *)self, pid, 0); }
static PyObject *get_page_mut(PyObject *self, PyObject *pid) { return view((Views *)self, pid, 1); }

/* write_page(pid, data, offset=0): the copy, with pwrite(2), when the quick path answers for
 * the page and no record in force vouches for data pages; the Pager's _write_page otherwise
 * (the errors, the retirement). */
static PyObject *write_page(PyObject *op, PyObject *args, PyObject *kwargs) {
    Views *self = (Views *)op;
    static char *kwlist[] = {"pid", "data", "offset", NULL};
    PyObject *pid, *data, *offset_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:write_page", kwlist, &pid, &data, &offset_obj)) return NULL;
    Py_ssize_t offset = 0;
    if (self->write_fd <= 0 || !self->fast_write || !self->fast_core) goto slow; /* fd 0: never set */
    if (offset_obj && (!PyLong_CheckExact(offset_obj) || (offset = PyLong_AsSsize_t(offset_obj)) < 0)) goto slow;
    long long index = quick_index(self, pid, self->rw, 2);
    if (index < 0) goto slow;
    /* bytes and bytearray here (the stable ABI of 3.10 has no buffer protocol); any other
     * buffer through the slow path */
    const char *buf;
    Py_ssize_t len;
    if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AsString(data);
        len = PyBytes_Size(data);
    } else if (PyByteArray_CheckExact(data)) {
        buf = PyByteArray_AsString(data);
        len = PyByteArray_Size(data);
    } else {
        goto slow;
    }
    if (!buf || len < 0 || offset > self->ps || len > self->ps - offset) goto slow;
    /* a bytearray may not change while the GIL is held: nothing here releases it */
    ssize_t w = pwrite(self->write_fd, buf, (size_t)len, (off_t)(index * self->ps + offset));
    if (w < 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (w != len) return PyErr_Format(PyExc_OSError, "a short write to page %lld", index);
    Py_RETURN_NONE;
slow:
    PyErr_Clear();
    PyObject *zero = NULL;
    if (!offset_obj) offset_obj = zero = PyLong_FromLong(0);
    if (!offset_obj) return NULL;
    PyObject *r = PyObject_CallMethodObjArgs(op, slow_names[2], pid, data, offset_obj, NULL);
    Py_XDECREF(zero);
    return r;
}

/* The first two of `nargs` arguments (`want` expected, as `usage` says) as addresses. */
static int addresses(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
                     unsigned long long out[2]) {
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (int i = 0; i < 2; i++) out[i] = PyLong_AsUnsignedLongLong(args[i]);
    return PyErr_Occurred() ? -1 : 0;
}

/* _set_fast_write(view_address, write_address): the C core's mp_view_try and mp_write_try,
 * for the core _set_fast_kind gave ((0, 0) takes them away). */
static PyObject *set_fast_write(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    Views *self = (Views *)op;
    unsigned long long fn[2];
    if (addresses(args, nargs, 2, "_set_fast_write(view_address, write_address)", fn) < 0) return NULL;
    self->fast_view = (kind_fn)(uintptr_t)fn[0];
    self->fast_write = (kind_fn)(uintptr_t)fn[1];
    Py_RETURN_NONE;
}

/* _set_fast_kind(function_address, core_address, owner): the C core's kind without waiting;
 * (0, 0, None) takes it away. */
static PyObject *set_fast_kind(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    Views *self = (Views *)op;
    unsigned long long a[2];
    if (addresses(args, nargs, 3, "_set_fast_kind(function_address, core_address, owner)", a) < 0) return NULL;
    unsigned long long fn = a[0], core = a[1];
    if (!fn != !core) {
        PyErr_SetString(PyExc_ValueError, "_set_fast_kind: both addresses or neither");
        return NULL;
    }
    PyObject *old = self->fast_owner;
    Py_INCREF(args[2]);
    self->fast_owner = args[2];
    self->fast_kind = (kind_fn)(uintptr_t)fn;
    self->fast_core = (void *)(uintptr_t)core;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static int views_traverse(PyObject *op, visitproc visit, void *arg) {
    Views *self = (Views *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->ro);
    Py_VISIT(self->rw);
    Py_VISIT(self->kind);
    Py_VISIT(self->fast_owner);
    return 0;
}

static int views_clear(PyObject *op) {
    Views *self = (Views *)op;
    self->fast_kind = NULL;
    self->fast_view = NULL;
    self->fast_write = NULL;
    self->fast_core = NULL;
    self->n = 0;
    Py_CLEAR(self->ro);
    Py_CLEAR(self->rw);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->fast_owner);
    return 0;
}

static void views_dealloc(PyObject *op) {
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    views_clear(op);
    freefunc free_ = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free_(op);
    Py_DECREF(type);
}

static PyMemberDef views_members[] = {
    {"_n", T_ULONGLONG, offsetof(Views, n), 0, "A page count no larger than the core's."},
    {"_ps", T_PYSSIZET, offsetof(Views, ps), 0, "The page size."},
    {"_ro", T_OBJECT_EX, offsetof(Views, ro), 0, "Read-only view of the mapping."},
    {"_watch", T_INT, offsetof(Views, watch), 0, "Whether get_page_mut always asks _get_page_mut."},
    {"_write_fd", T_INT, offsetof(Views, write_fd), 0, "The file write_page writes (-1: none)."},
    {"_rw", T_OBJECT_EX, offsetof(Views, rw), 0, "Writable view of the mapping."},
    {"_kind", T_OBJECT_EX, offsetof(Views, kind), 0, "The core's kind(page)."},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef views_methods[] = {
    {"get_page", get_page, METH_O,
     "get_page($self, pid, /)\n--\n\n"
     "Read-only ``memoryview`` of ``page_size`` bytes, straight into the mapping.\n\n"
     "Raises ``TypeError`` for anything but a ``PageId``, ``PageSizeMismatch`` for one of\n"
     "another page size, ``OutOfBounds`` beyond the file, ``ReservedPage`` for an internal\n"
     "page and ``Unavailable`` once closed. A free page may be viewed."},
    {"_set_fast_kind", (PyCFunction)(void (*)(void))set_fast_kind, METH_FASTCALL,
     "The C core's kind without waiting, as addresses, and the object that owns it."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef writable_methods[] = {
    {"get_page_mut", get_page_mut, METH_O,
     "get_page_mut($self, pid, /)\n--\n\n"
     "Writable ``memoryview`` of ``page_size`` bytes into the mapping; ``flush`` makes what\n"
     "is written durable. Raises as ``get_page`` does."},
    {"write_page", (PyCFunction)(void (*)(void))write_page, METH_VARARGS | METH_KEYWORDS,
     "write_page($self, /, pid, data, offset=0)\n--\n\n"
     "Copy ``data`` (any bytes-like object) into the data page ``pid`` at ``offset``; see\n"
     "docs/API.md. A page a batch allocated and wrote with write_page only is sealed by the\n"
     "batch's flush(ids): the batch's record vouches for it, and the commit takes one\n"
     "barrier. Raises as get_page_mut does, and ValueError when data does not fit."},
    {"_set_fast_write", (PyCFunction)(void (*)(void))set_fast_write, METH_FASTCALL,
     "The C core's mp_view_try and mp_write_try, as addresses."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot views_slots[] = {
    {Py_tp_traverse, (void *)views_traverse},
    {Py_tp_clear, (void *)views_clear},
    {Py_tp_dealloc, (void *)views_dealloc},
    {Py_tp_members, views_members},
    {Py_tp_methods, views_methods},
    {Py_tp_doc, "The views' state and get_page, beneath every reader."},
    {0, NULL},
};
static PyType_Slot writable_slots[] = {
    {Py_tp_methods, writable_methods},
    {Py_tp_doc, "Views with get_page_mut, beneath the Pager."},
    {0, NULL},
};
#define VIEW_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)
static PyType_Spec views_spec = {"mappedpages._views.Views", sizeof(Views), 0, VIEW_FLAGS, views_slots};
/* traversal and clearing come from Views, and with them the GC flag */
static PyType_Spec writable_spec = {"mappedpages._views.WritableViews", sizeof(Views), 0,
                                    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, writable_slots};

/* ---- module ------------------------------------------------------------------------------- */

/* _register(PageId, checker): the class get_page takes, and what checks unusual handle
 * arguments (raising the handle's errors) and returns them as (index, page_size). */
static PyObject *register_handles(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], page_base) ||
        !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_register(a PageIdBase subclass, checker)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_INCREF(args[1]);
    Py_XDECREF((PyObject *)page_id_type);
    Py_XDECREF(checker);
    page_id_type = (PyTypeObject *)args[0];
    checker = args[1];
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"new_handle", (PyCFunction)(void (*)(void))new_handle, METH_FASTCALL,
     "new_handle(cls, index, page_size): a handle for a page number from a core, unchecked."},
    {"new_handles", (PyCFunction)(void (*)(void))new_handles, METH_FASTCALL,
     "new_handles(cls, indices, page_size) -> list: handles for page numbers from a core."},
    {"_register", (PyCFunction)(void (*)(void))register_handles, METH_FASTCALL,
     "_register(PageId, checker): the handle class get_page takes, and the argument checker."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mappedpages._views", NULL, -1, module_methods, NULL, NULL, NULL, NULL,
};

static int add_type(PyObject *m, const char *name, PyType_Spec *spec, PyObject *bases, PyTypeObject **out) {
    PyObject *t = PyType_FromSpecWithBases(spec, bases);
    if (!t) return -1;
    Py_INCREF(t);
    if (PyModule_AddObject(m, name, t) < 0) { /* steals one reference on success only */
        Py_DECREF(t);
        Py_DECREF(t);
        return -1;
    }
    if (out) *out = (PyTypeObject *)t;
    else Py_DECREF(t);
    return 0;
}

PyMODINIT_FUNC PyInit__views(void) {
    PyObject *m = PyModule_Create(&module_def), *tuple_base = NULL, *views_base = NULL;
    PyTypeObject *views = NULL;
    if (!m) return NULL;
    kind_tags[KIND_PAGE] = PyLong_FromLong(KIND_PAGE);
    kind_tags[KIND_PROTECTED] = PyLong_FromLong(KIND_PROTECTED);
    slow_names[0] = PyUnicode_InternFromString("_get_page");
    slow_names[1] = PyUnicode_InternFromString("_get_page_mut");
    slow_names[2] = PyUnicode_InternFromString("_write_page");
    tuple_base = PyTuple_Pack(1, (PyObject *)&PyTuple_Type);
    if (!kind_tags[0] || !kind_tags[1] || !slow_names[0] || !slow_names[1] || !slow_names[2] || !tuple_base) goto fail;
    if (add_type(m, "PageIdBase", &page_spec, tuple_base, &page_base) < 0) goto fail;
    if (add_type(m, "ProtectedPageIdBase", &protected_spec, tuple_base, &protected_base) < 0) goto fail;
    if (add_type(m, "Views", &views_spec, NULL, &views) < 0) goto fail;
    views_base = PyTuple_Pack(1, (PyObject *)views);
    if (!views_base || add_type(m, "WritableViews", &writable_spec, views_base, NULL) < 0) goto fail;
    Py_DECREF((PyObject *)views);
    Py_DECREF(tuple_base);
    Py_DECREF(views_base);
    return m;
fail:
    Py_XDECREF((PyObject *)views);
    Py_XDECREF(tuple_base);
    Py_XDECREF(views_base);
    Py_DECREF(m);
    return NULL;
}
