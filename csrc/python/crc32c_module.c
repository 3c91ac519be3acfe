/* mappedpages._crc32c: mp.crc32c as a plain CPython function, for the C core.
 *
 * cffi's per-call cost (about 100 ns, most of it releasing and retaking the GIL) is most of
 * the time of a checksum over a 4 KiB page. This module calls the same mp_crc32c directly for
 * bytes objects and, where the stable ABI has the buffer protocol (3.11), for any contiguous
 * buffer, such as a page's memoryview. Every other argument goes to the cffi function set with
 * _set_fallback (keywords, other objects, errors), so that the behaviour is that one.
 * Only the stable ABI is used, so the wheel stays abi3; setup.py defines Py_LIMITED_API as
 * 3.10 or 3.11, after the building interpreter. Vectorcall (METH_FASTCALL) spares the
 * argument tuple: about 20 ns of the 180 a 4 KiB page costs. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../crc32c.h"

/* Longer inputs are checksummed with the GIL released, as the cffi function does. */
#define RELEASE_GIL_FROM 65536

static PyObject *fallback;

static PyObject *checksum(unsigned long crc, const char *p, Py_ssize_t len) {
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

/* The fallback with the vectorcall arguments as a tuple and a dict (PyObject_Vectorcall is
 * not in the stable ABI before 3.12). */
static PyObject *call_fallback(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (!fallback) {
        PyErr_SetString(PyExc_RuntimeError, "mappedpages._crc32c has no fallback set");
        return NULL;
    }
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *result = NULL;
    if (!tuple) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(tuple, i, args[i]); /* steals the reference */
    }
    if (kwnames) {
        kwargs = PyDict_New();
        if (!kwargs) goto done;
        for (Py_ssize_t i = 0; i < PyTuple_Size(kwnames); i++)
            if (PyDict_SetItem(kwargs, PyTuple_GetItem(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    result = PyObject_Call(fallback, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return result;
}

static PyObject *crc32c(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    (void)self;
    if (kwnames || nargs < 1 || nargs > 2) return call_fallback(args, nargs, kwnames);
    unsigned long crc = 0;
    if (nargs == 2) { /* anything but an int in [0, 2**32): the fallback says what is wrong */
        if (!PyLong_CheckExact(args[1])) return call_fallback(args, nargs, kwnames);
        crc = PyLong_AsUnsignedLong(args[1]);
        if (crc == (unsigned long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return call_fallback(args, nargs, kwnames);
        }
        if (crc > 0xFFFFFFFFul) return call_fallback(args, nargs, kwnames);
    }
    PyObject *data = args[0];
    if (PyBytes_Check(data)) {
        char *p;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(data, &p, &len) < 0) return NULL;
        return checksum(crc, p, len);
    }
#if Py_LIMITED_API + 0 >= 0x030B0000
    if (PyObject_CheckBuffer(data)) {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0) {
            PyObject *r = checksum(crc, view.buf, view.len);
            PyBuffer_Release(&view);
            return r;
        }
        PyErr_Clear(); /* not contiguous: the fallback copies it */
    }
#endif
    return call_fallback(args, nargs, kwnames);
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
    {"crc32c", (PyCFunction)(void (*)(void))crc32c, METH_FASTCALL | METH_KEYWORDS,
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
