/* mappedpages._crc32c: mp.crc32c as a plain CPython function, for the C core.
 *
 * cffi's per-call cost (about 100 ns, most of it releasing and retaking the GIL) is most of
 * the time of a checksum over a 4 KiB page. This module calls the same mp_crc32c directly for
 * bytes objects, the common case, and hands every other argument to the cffi function set with
 * _set_fallback (other buffer types, keywords, errors), so that the behaviour is that one.
 * Only the stable ABI is used (bytes need no buffer protocol), so the wheel stays abi3. */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../crc32c.h"

/* Longer inputs are checksummed with the GIL released, as the cffi function does. */
#define RELEASE_GIL_FROM 65536

static PyObject *fallback;

static PyObject *crc32c(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    Py_ssize_t n = PyTuple_Size(args);
    PyObject *data = n >= 1 ? PyTuple_GetItem(args, 0) : NULL;
    if (!kwargs && (n == 1 || n == 2) && data && PyBytes_Check(data)) {
        unsigned long crc = 0;
        if (n == 2) {
            PyObject *value = PyTuple_GetItem(args, 1);
            if (!PyLong_Check(value)) goto slow;
            crc = PyLong_AsUnsignedLongMask(value);
            if (crc == (unsigned long)-1 && PyErr_Occurred()) return NULL;
        }
        char *p;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(data, &p, &len) < 0) return NULL;
        uint32_t r;
        if (len >= RELEASE_GIL_FROM) {
            Py_BEGIN_ALLOW_THREADS
            r = mp_crc32c((uint32_t)crc, (const unsigned char *)p, (size_t)len);
            Py_END_ALLOW_THREADS
        } else {
            r = mp_crc32c((uint32_t)crc, (const unsigned char *)p, (size_t)len);
        }
        return PyLong_FromUnsignedLong(r);
    }
slow:
    if (!fallback) {
        PyErr_SetString(PyExc_RuntimeError, "mappedpages._crc32c has no fallback set");
        return NULL;
    }
    return PyObject_Call(fallback, args, kwargs);
}

static PyObject *set_fallback(PyObject *self, PyObject *fn) {
    (void)self;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "the fallback must be callable");
        return NULL;
    }
    Py_INCREF(fn);
    Py_XDECREF(fallback);
    fallback = fn;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"crc32c", (PyCFunction)(void (*)(void))crc32c, METH_VARARGS | METH_KEYWORDS,
     "crc32c(data, crc=0) -> int: CRC32C of a bytes-like object, continuing from crc."},
    {"_set_fallback", set_fallback, METH_O, "The function that handles what is not bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mappedpages._crc32c", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__crc32c(void) {
    mp_crc32c_select(-1); /* the tables, now, under the import lock */
    return PyModule_Create(&module);
}
