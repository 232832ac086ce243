/* The file source's cut of a plain chunk into records, in C.
 *
 * agent/sources/tailed.py holds the same loop in Python, cut_plain_py: it is the reference (tests
 * hold the two equal, record for record) and the fallback where this module was not built. Read
 * it first; this file does what it does:
 *
 *   if a line of `data` ending in "\n" is longer than `max_line`: return None
 *   for each line of `data` ending in "\n" (a last piece without one is left out):
 *       out.append(pending({"ts": ts, "src": source, "msg": line,
 *                           "log": {"file": file, "offset": at}},
 *                          checkpoint(source, key, end, path)))
 *   return the offset after the last line
 *
 * where `file` is one {"path": path} shared by the chunk's records, `at` the offset of the line
 * and `end` the offset after its newline (the next line's `at`: the same int object, as in the
 * Python loop). `data` must be ASCII: it raises the UnicodeDecodeError data.decode("ascii")
 * raises, before any record is made. On an error `out` is left as it was.
 *
 * What moves here is the per-line work: the line's str is made with PyUnicode_New + memcpy, the
 * two dicts as copies of templates holding the chunk's keys and values, and when `pending` and
 * `checkpoint` are agent.sources' Pending (a slots dataclass whose generated __init__ only sets
 * its two slots) and Checkpoint (a named tuple, whose __new__ only makes the tuple), their objects
 * are made directly rather than through those Python functions. Other types are called, as the
 * Python loop calls them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX, READONLY (Py_T_OBJECT_EX and Py_READONLY are 3.12+) */

#include <limits.h>
#include <stdint.h>
#include <string.h>

static PyObject *str_ts, *str_src, *str_msg, *str_log, *str_file, *str_offset, *str_path;
static PyObject *str_record, *str_checkpoint, *str_fields, *str_dc_fields, *str_post_init;

/* Whether the bytes are all ASCII (eight at a time; compilers vectorize it). */
static int is_ascii(const char *data, Py_ssize_t n) {
    const unsigned char *s = (const unsigned char *)data;
    uint64_t any = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        any |= word;
    }
    for (; i < n; i++) {
        any |= s[i];
    }
    return (any & UINT64_C(0x8080808080808080)) == 0;
}

/* The length of the longest line of `data` that ends in "\n" (0 if none does). */
static Py_ssize_t longest_line(const char *data, Py_ssize_t n, Py_ssize_t *count) {
    Py_ssize_t longest = 0, lines = 0;
    const char *line = data, *stop = data + n, *newline;
    while ((newline = memchr(line, '\n', (size_t)(stop - line))) != NULL) {
        if (newline - line > longest) {
            longest = newline - line;
        }
        lines++;
        line = newline + 1;
    }
    if (count != NULL) {
        *count = lines;
    }
    return longest;
}

/* The offset of `type`'s writable object slot `name` in its instances, or -1 when `name` is not
 * one (or the look-up failed: no exception is left set). */
static Py_ssize_t slot_offset(PyObject *type, PyObject *name) {
    PyObject *descr = PyObject_GetAttr(type, name);
    Py_ssize_t offset = -1;
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
        PyDescr_TYPE(descr) == (PyTypeObject *)type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY) && member->offset > 0) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    return offset;
}

/* Whether `type` has the attribute `name` (no exception is left set). */
static int has_attr(PyObject *type, PyObject *name) {
    PyObject *found = PyObject_GetAttr(type, name);
    if (found == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(found);
    return 1;
}

/* Whether `name` is the str `expected`. */
static int is_name(PyObject *name, PyObject *expected) {
    return PyUnicode_Check(name) && PyUnicode_Compare(name, expected) == 0;
}

/* Whether `type` is shaped as agent.sources.Pending: a dataclass of exactly the fields record and
 * checkpoint, in that order, in slots, straight off object (and of the plain metaclass), without
 * __dict__, __setattr__ or __post_init__. Then calling it only stores its two arguments in a
 * fresh object, which is what we do instead. Sets the slots' offsets. */
static int plain_pending(PyObject *type, Py_ssize_t *record_at, Py_ssize_t *checkpoint_at) {
    if (!PyType_CheckExact(type)) { /* a metaclass may have a __call__ of its own */
        return 0;
    }
    PyTypeObject *t = (PyTypeObject *)type;
    if (t->tp_base != &PyBaseObject_Type || t->tp_dictoffset != 0 ||
        t->tp_new != PyBaseObject_Type.tp_new ||
        t->tp_setattro != PyBaseObject_Type.tp_setattro || has_attr(type, str_post_init)) {
        return 0;
    }
    PyObject *fields = PyObject_GetAttr(type, str_dc_fields);
    if (fields == NULL) {
        PyErr_Clear();
        return 0;
    }
    /* The generated __init__ takes the fields in their order: record first. */
    Py_ssize_t at = 0;
    PyObject *first, *second, *value;
    int two = PyDict_Check(fields) && PyDict_GET_SIZE(fields) == 2 &&
              PyDict_Next(fields, &at, &first, &value) && is_name(first, str_record) &&
              PyDict_Next(fields, &at, &second, &value) && is_name(second, str_checkpoint);
    Py_DECREF(fields);
    if (!two) {
        return 0;
    }
    *record_at = slot_offset(type, str_record);
    *checkpoint_at = slot_offset(type, str_checkpoint);
    return *record_at > 0 && *checkpoint_at > 0 && *record_at != *checkpoint_at;
}

/* Whether `type` is shaped as agent.sources.Checkpoint: a named tuple of four fields (a subclass
 * of tuple that adds no storage nor an __init__, of the plain metaclass). Its __new__ only makes
 * the tuple, which is what we do instead. */
static int plain_checkpoint(PyObject *type) {
    if (!PyType_CheckExact(type)) { /* a metaclass may have a __call__ of its own */
        return 0;
    }
    PyTypeObject *t = (PyTypeObject *)type;
    if (t->tp_base != &PyTuple_Type || t->tp_dictoffset != 0 ||
        t->tp_basicsize != PyTuple_Type.tp_basicsize ||
        t->tp_itemsize != PyTuple_Type.tp_itemsize || t->tp_init != PyTuple_Type.tp_init) {
        return 0;
    }
    PyObject *fields = PyObject_GetAttr(type, str_fields);
    if (fields == NULL) {
        PyErr_Clear();
        return 0;
    }
    int four = PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == 4;
    Py_DECREF(fields);
    return four;
}

/* A dict of the given keys and values, in that order. New reference. */
static PyObject *make_dict(PyObject *const *keys, PyObject *const *values, int n) {
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (PyDict_SetItem(dict, keys[i], values[i]) < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

/* A copy of `template` with `value` set under `key` (and `value2` under `key2` unless NULL),
 * keys it holds already: the copy keeps their order. New reference. */
static PyObject *copy_with(PyObject *template, PyObject *key, PyObject *value, PyObject *key2,
                           PyObject *value2) {
    PyObject *dict = PyDict_Copy(template);
    if (dict != NULL && (PyDict_SetItem(dict, key, value) < 0 ||
                         (key2 != NULL && PyDict_SetItem(dict, key2, value2) < 0))) {
        Py_CLEAR(dict);
    }
    return dict;
}

/* checkpoint(source, key, end, path). New reference. */
static PyObject *make_checkpoint(PyObject *type, int plain, PyObject *const fields[4]) {
    if (!plain) {
        return PyObject_Vectorcall(type, fields, 4, NULL);
    }
    /* As tuple.__new__(type, fields) does for a subclass. */
    PyObject *cp = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 4);
    if (cp == NULL) {
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        PyTuple_SET_ITEM(cp, i, Py_NewRef(fields[i]));
    }
    return cp;
}

/* pending(record, cp). New reference. */
static PyObject *make_pending(PyObject *type, int plain, Py_ssize_t record_at,
                              Py_ssize_t checkpoint_at, PyObject *record, PyObject *cp) {
    if (!plain) {
        PyObject *args[2] = {record, cp};
        return PyObject_Vectorcall(type, args, 2, NULL);
    }
    PyObject *pending = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    if (pending == NULL) {
        return NULL;
    }
    *(PyObject **)((char *)pending + record_at) = Py_NewRef(record);
    *(PyObject **)((char *)pending + checkpoint_at) = Py_NewRef(cp);
    return pending;
}

PyDoc_STRVAR(cut_plain_doc,
             "cut_plain(data, ts, source, key, path, offset, pending, checkpoint, out, max_line)\n--\n\n"
             "See agent.sources.tailed.cut_plain_py: the same loop, the same results.");

static PyObject *cut_plain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "cut_plain takes 10 arguments");
        return NULL;
    }
    PyObject *data = args[0], *ts = args[1], *source = args[2], *key = args[3], *path = args[4];
    PyObject *offset_obj = args[5], *pending_type = args[6], *checkpoint_type = args[7];
    PyObject *out = args[8];
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    if (!PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "out must be a list");
        return NULL;
    }
    if (!PyLong_Check(offset_obj)) {
        PyErr_SetString(PyExc_TypeError, "offset must be an int");
        return NULL;
    }
    long long offset = PyLong_AsLongLong(offset_obj);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (offset > LLONG_MAX - (long long)n) {
        PyErr_SetString(PyExc_OverflowError, "offset too large");
        return NULL;
    }
    if (!is_ascii(p, n)) {
        PyObject *decoded = PyUnicode_DecodeASCII(p, n, NULL); /* raises data.decode's error */
        if (decoded != NULL) {
            Py_DECREF(decoded);
            PyErr_SetString(PyExc_SystemError, "is_ascii and PyUnicode_DecodeASCII disagree");
        }
        return NULL;
    }
    /* Any int, as the Python loop compares it: one past a long long limits no line (or all). */
    int overflow = 0;
    long long max_line = PyLong_AsLongLongAndOverflow(args[9], &overflow);
    if (max_line == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow) {
        max_line = overflow < 0 ? LLONG_MIN : LLONG_MAX;
    }
    if ((long long)longest_line(p, n, NULL) > max_line) {
        Py_RETURN_NONE; /* before any record is made, as the Python loop */
    }
    Py_ssize_t record_at = 0, checkpoint_at = 0;
    int pending_plain = plain_pending(pending_type, &record_at, &checkpoint_at);
    int checkpoint_plain = plain_checkpoint(checkpoint_type);

    /* The records and their logs are copies of these, with the line's values set: copying a
     * small dict's table is cheaper than building it key by key, and keeps the key order. */
    Py_ssize_t had = PyList_GET_SIZE(out);
    PyObject *log_template = NULL, *record_template = NULL, *at = NULL;
    const char *line = p, *stop = p + n;
    long long pos = offset;
    PyObject *file = make_dict(&str_path, &path, 1);
    if (file != NULL) {
        PyObject *keys[2] = {str_file, str_offset}, *values[2] = {file, Py_None};
        log_template = make_dict(keys, values, 2);
        Py_DECREF(file);
    }
    if (log_template != NULL) {
        PyObject *keys[4] = {str_ts, str_src, str_msg, str_log};
        PyObject *values[4] = {ts, source, Py_None, Py_None};
        record_template = make_dict(keys, values, 4);
    }
    if (record_template == NULL) {
        goto fail;
    }
    at = Py_NewRef(offset_obj); /* the current line's offset */
    for (;;) {
        const char *newline = memchr(line, '\n', (size_t)(stop - line));
        if (newline == NULL) {
            break;
        }
        Py_ssize_t len = newline - line;
        pos += len + 1;
        PyObject *end = PyLong_FromLongLong(pos);
        PyObject *msg = PyUnicode_New(len, 127);
        if (end == NULL || msg == NULL) {
            Py_XDECREF(end);
            Py_XDECREF(msg);
            goto fail;
        }
        memcpy(PyUnicode_1BYTE_DATA(msg), line, (size_t)len);
        PyObject *record = NULL, *cp = NULL, *pending = NULL;
        PyObject *log = copy_with(log_template, str_offset, at, NULL, NULL);
        if (log != NULL) {
            record = copy_with(record_template, str_msg, msg, str_log, log);
        }
        if (record != NULL) {
            PyObject *fields[4] = {source, key, end, path};
            cp = make_checkpoint(checkpoint_type, checkpoint_plain, fields);
        }
        if (cp != NULL) {
            pending = make_pending(pending_type, pending_plain, record_at, checkpoint_at, record,
                                   cp);
        }
        int appended = pending != NULL && PyList_Append(out, pending) == 0;
        Py_DECREF(msg);
        Py_XDECREF(log);
        Py_XDECREF(record);
        Py_XDECREF(cp);
        Py_XDECREF(pending);
        Py_SETREF(at, end); /* the next line starts where this one ends */
        if (!appended) {
            goto fail;
        }
        line = newline + 1;
    }
    Py_DECREF(log_template);
    Py_DECREF(record_template);
    return at;

fail:
    Py_XDECREF(at);
    Py_XDECREF(log_template);
    Py_XDECREF(record_template);
    /* As the Python loop, which extends `out` only once all its records are made. */
    if (PyList_GET_SIZE(out) > had) {
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb); /* PyErr_GetRaisedException is 3.12+ */
        int cut = PyList_SetSlice(out, had, PyList_GET_SIZE(out), NULL);
        PyErr_Restore(type, exc, tb);
        (void)cut; /* shrinking a list does not fail */
    }
    return NULL;
}

PyDoc_STRVAR(line_stats_doc,
             "line_stats(data)\n--\n\nSee agent.sources.tailed.line_stats_py: the same result.");

static PyObject *py_line_stats(PyObject *Py_UNUSED(module), PyObject *data) {
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    Py_ssize_t count;
    Py_ssize_t longest = longest_line(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &count);
    return Py_BuildValue("(nn)", count, longest);
}

PyDoc_STRVAR(newlines_doc,
             "newlines(data, begin, end)\n--\n\ndata.count(b\"\\n\", begin, end) for bytes and "
             "0 <= begin <= end <= len(data).");

static PyObject *py_newlines(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "newlines takes bytes, begin and end");
        return NULL;
    }
    Py_ssize_t begin = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = begin == -1 && PyErr_Occurred() ? -1 : PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (begin < 0 || begin > end || end > PyBytes_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= begin <= end <= len(data)");
        return NULL;
    }
    /* A plain loop, which the compiler vectorizes: a memchr call per line cost more than the
     * bytes it scanned, lines being short. */
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(args[0]) + begin;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < end - begin; i++) {
        count += at[i] == '\n';
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"newlines", (PyCFunction)(void (*)(void))py_newlines, METH_FASTCALL, newlines_doc},
    {"cut_plain", (PyCFunction)(void (*)(void))cut_plain, METH_FASTCALL, cut_plain_doc},
    {"line_stats", py_line_stats, METH_O, line_stats_doc},
    {NULL, NULL, 0, NULL},
};

static int intern(PyObject **slot, const char *text) {
    if (*slot == NULL) {
        *slot = PyUnicode_InternFromString(text);
    }
    return *slot == NULL ? -1 : 0;
}

static int exec_module(PyObject *Py_UNUSED(module)) {
    /* Interned, as the keys of the Python loop's dict displays are: the same objects. */
    if (intern(&str_ts, "ts") < 0 || intern(&str_src, "src") < 0 ||
        intern(&str_msg, "msg") < 0 || intern(&str_log, "log") < 0 ||
        intern(&str_file, "file") < 0 || intern(&str_offset, "offset") < 0 ||
        intern(&str_path, "path") < 0 || intern(&str_record, "record") < 0 ||
        intern(&str_checkpoint, "checkpoint") < 0 || intern(&str_fields, "_fields") < 0 ||
        intern(&str_dc_fields, "__dataclass_fields__") < 0 ||
        intern(&str_post_init, "__post_init__") < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent.sources._speedups",
    .m_doc = "Hot loop of the file source in C (see agent/sources/tailed.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModuleDef_Init(&module_def); }
