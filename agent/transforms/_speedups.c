/* The syslog parser's header split, in C.
 *
 * agent/transforms/syslog.py holds the reference: split_bsd_py(line) and split_iso_py(line) are
 * _RFC3164.match(line).groups() and _RFC3339.match(line).groups() (None when there is no match).
 * Tests hold these functions equal to them for any str; read the two patterns first:
 *
 *   pri   (?:<(?P<pri>\d{1,3})>)?
 *   bsd   (?P<stamp>(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<time>\d\d:\d\d:\d\d)
 *         (?:\.(?P<frac>\d{1,9}))?) (?:(?P<host>\S{1,255}+) )??
 *   iso   (?P<stamp>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)
 *         (?:(?P<host>\S{1,255}+) )??
 *   tail  (?P<prog>[^\s:\[\]]{1,64}+)(?:\[(?P<pid>\d{1,10})\])?: ?(?P<body>.*)     (re.S)
 *
 * Backtracking never finds a second way through them, so one pass decides:
 *   - an optional group followed by a character it cannot start with is taken whole or the match
 *     fails (pri, frac, zone, pid): the text after the group is fixed by what the group consumed,
 *     and a shorter run of digits would leave a digit where a delimiter must follow;
 *   - day is two characters when the first is " " or a digit and the second a digit, else one;
 *   - the lazy host is tried absent first, then as the whole run of non-space characters (at most
 *     255, possessive) that a space must follow;
 *   - prog is the whole run (at most 64, possessive) of characters other than whitespace, ":", "["
 *     and "]", which "[" pid "]" ":" or ":" must follow; ": ?" takes the space when there is one.
 * Character classes are re's for str patterns: \d is Py_UNICODE_ISDECIMAL, \s Py_UNICODE_ISSPACE
 * (so "\u0663" is a digit and "\x1c" or "\u00a0" a space), [A-Z] and [a-z] are ASCII ranges.
 *
 * Only an exact str is accepted (TypeError otherwise): re slices a subclass with its own
 * __getitem__, which the caller never passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

static Py_UCS4 at(const Text *t, Py_ssize_t i) {
    return i < t->n ? PyUnicode_READ(t->kind, t->data, i) : 0;
}

static int is_digit(const Text *t, Py_ssize_t i) {
    return i < t->n && Py_UNICODE_ISDECIMAL(PyUnicode_READ(t->kind, t->data, i));
}

static int is_space(const Text *t, Py_ssize_t i) {
    return i < t->n && Py_UNICODE_ISSPACE(PyUnicode_READ(t->kind, t->data, i));
}

/* The digits starting at i, counted up to `most` + 1 (enough to tell "too many"). */
static Py_ssize_t digits(const Text *t, Py_ssize_t i, Py_ssize_t most) {
    Py_ssize_t d = 0;
    while (d <= most && is_digit(t, i + d)) {
        d++;
    }
    return d;
}

/* A span of the line: [start, end), or absent (start < 0). */
typedef struct {
    Py_ssize_t start, end;
} Span;

static const Span NONE = {-1, -1};

/* pri at the start: its span (absent if there is none) and where the stamp starts; -1 if the
 * line cannot match (it starts with "<" but no valid pri follows: the stamp cannot start with
 * "<"). */
static Py_ssize_t match_pri(const Text *t, Span *pri) {
    *pri = NONE;
    if (at(t, 0) != '<') {
        return 0;
    }
    Py_ssize_t d = digits(t, 1, 3);
    if (d < 1 || d > 3 || at(t, 1 + d) != '>') {
        return -1;
    }
    pri->start = 1;
    pri->end = 1 + d;
    return d + 2;
}

/* host (lazy, optional), prog, pid and body from i; 0 on a match, -1 if none. */
static int match_prog(const Text *t, Py_ssize_t i, Span *prog, Span *pid, Span *body) {
    Py_ssize_t run = 0;
    while (run < 64 && i + run < t->n) {
        Py_UCS4 ch = at(t, i + run);
        if (ch == ':' || ch == '[' || ch == ']' || Py_UNICODE_ISSPACE(ch)) {
            break;
        }
        run++;
    }
    if (run == 0) {
        return -1;
    }
    Py_ssize_t j = i + run;
    *pid = NONE;
    if (at(t, j) == '[') {
        Py_ssize_t d = digits(t, j + 1, 10);
        if (d >= 1 && d <= 10 && at(t, j + 1 + d) == ']') {
            pid->start = j + 1;
            pid->end = j + 1 + d;
            j += d + 2;
        }
    }
    if (j >= t->n || at(t, j) != ':') {
        return -1;
    }
    j++;
    if (at(t, j) == ' ') {
        j++;
    }
    prog->start = i;
    prog->end = i + run;
    body->start = j;
    body->end = t->n;
    return 0;
}

static int match_tail(const Text *t, Py_ssize_t i, Span *host, Span *prog, Span *pid, Span *body) {
    *host = NONE;
    if (match_prog(t, i, prog, pid, body) == 0) {
        return 0;
    }
    Py_ssize_t run = 0;
    while (run < 255 && i + run < t->n && !is_space(t, i + run)) {
        run++;
    }
    if (run == 0 || at(t, i + run) != ' ' || i + run >= t->n) {
        return -1;
    }
    if (match_prog(t, i + run + 1, prog, pid, body) < 0) {
        return -1;
    }
    host->start = i;
    host->end = i + run;
    return 0;
}

/* The groups as a tuple of str (a substring) or None. */
static PyObject *groups(PyObject *line, const Span *spans, Py_ssize_t count) {
    PyObject *out = PyTuple_New(count);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t g = 0; g < count; g++) {
        PyObject *item;
        if (spans[g].start < 0) {
            item = Py_NewRef(Py_None);
        } else {
            item = PyUnicode_Substring(line, spans[g].start, spans[g].end);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyTuple_SET_ITEM(out, g, item);
    }
    return out;
}

static int text_of(PyObject *line, Text *t) {
    if (!PyUnicode_CheckExact(line)) {
        PyErr_Format(PyExc_TypeError, "line must be a str, not %.100s", Py_TYPE(line)->tp_name);
        return -1;
    }
    t->kind = PyUnicode_KIND(line);
    t->data = PyUnicode_DATA(line);
    t->n = PyUnicode_GET_LENGTH(line);
    return 0;
}

static int is_upper(Py_UCS4 ch) { return ch >= 'A' && ch <= 'Z'; }
static int is_lower(Py_UCS4 ch) { return ch >= 'a' && ch <= 'z'; }

PyDoc_STRVAR(split_bsd_doc, "split_bsd(line, /)\n--\n\n"
                            "_RFC3164.match(line).groups(), or None (syslog.split_bsd_py).");

static PyObject *split_bsd(PyObject *Py_UNUSED(module), PyObject *line) {
    Text t;
    if (text_of(line, &t) < 0) {
        return NULL;
    }
    /* pri, stamp, mon, day, time, frac, host, prog, pid, body */
    Span s[10];
    Py_ssize_t i = match_pri(&t, &s[0]);
    if (i < 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t stamp = i;
    if (!is_upper(at(&t, i)) || !is_lower(at(&t, i + 1)) || !is_lower(at(&t, i + 2)) ||
        at(&t, i + 3) != ' ' || i + 3 >= t.n) {
        Py_RETURN_NONE;
    }
    s[2] = (Span){i, i + 3};
    i += 4;
    Py_UCS4 first = at(&t, i);
    if ((first == ' ' || is_digit(&t, i)) && i < t.n && is_digit(&t, i + 1)) {
        s[3] = (Span){i, i + 2};
    } else if (is_digit(&t, i)) {
        s[3] = (Span){i, i + 1};
    } else {
        Py_RETURN_NONE;
    }
    i = s[3].end;
    if (at(&t, i) != ' ' || i >= t.n) {
        Py_RETURN_NONE;
    }
    i++;
    if (!is_digit(&t, i) || !is_digit(&t, i + 1) || at(&t, i + 2) != ':' ||
        !is_digit(&t, i + 3) || !is_digit(&t, i + 4) || at(&t, i + 5) != ':' ||
        !is_digit(&t, i + 6) || !is_digit(&t, i + 7)) {
        Py_RETURN_NONE;
    }
    s[4] = (Span){i, i + 8};
    i += 8;
    s[5] = NONE;
    if (at(&t, i) == '.' && i < t.n) {
        Py_ssize_t d = digits(&t, i + 1, 9);
        if (d < 1 || d > 9) {
            Py_RETURN_NONE;
        }
        s[5] = (Span){i + 1, i + 1 + d};
        i += 1 + d;
    }
    s[1] = (Span){stamp, i};
    if (at(&t, i) != ' ' || i >= t.n) {
        Py_RETURN_NONE;
    }
    if (match_tail(&t, i + 1, &s[6], &s[7], &s[8], &s[9]) < 0) {
        Py_RETURN_NONE;
    }
    return groups(line, s, 10);
}

PyDoc_STRVAR(split_iso_doc, "split_iso(line, /)\n--\n\n"
                            "_RFC3339.match(line).groups(), or None (syslog.split_iso_py).");

static PyObject *split_iso(PyObject *Py_UNUSED(module), PyObject *line) {
    Text t;
    if (text_of(line, &t) < 0) {
        return NULL;
    }
    /* pri, stamp, host, prog, pid, body */
    Span s[6];
    Py_ssize_t i = match_pri(&t, &s[0]);
    if (i < 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t stamp = i;
    /* \d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d: 19 characters, a digit where the pattern has \d */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (Py_ssize_t k = 0; k < 19; k++) {
        Py_ssize_t p = i + k;
        if (shape[k] == 'd') {
            if (!is_digit(&t, p)) {
                Py_RETURN_NONE;
            }
        } else if (shape[k] == 'T') {
            Py_UCS4 ch = at(&t, p);
            if ((ch != 'T' && ch != ' ') || p >= t.n) {
                Py_RETURN_NONE;
            }
        } else if (at(&t, p) != (Py_UCS4)shape[k] || p >= t.n) {
            Py_RETURN_NONE;
        }
    }
    i += 19;
    if (at(&t, i) == '.' && i < t.n) {
        Py_ssize_t d = digits(&t, i + 1, 9);
        if (d < 1 || d > 9) {
            Py_RETURN_NONE;
        }
        i += 1 + d;
    }
    Py_UCS4 zone = at(&t, i);
    if (zone == 'Z' && i < t.n) {
        i += 1;
    } else if ((zone == '+' || zone == '-') && i < t.n) {
        if (!is_digit(&t, i + 1) || !is_digit(&t, i + 2)) {
            Py_RETURN_NONE;
        }
        Py_ssize_t m = at(&t, i + 3) == ':' && i + 3 < t.n ? i + 4 : i + 3;
        if (!is_digit(&t, m) || !is_digit(&t, m + 1)) {
            Py_RETURN_NONE;
        }
        i = m + 2;
    }
    s[1] = (Span){stamp, i};
    if (at(&t, i) != ' ' || i >= t.n) {
        Py_RETURN_NONE;
    }
    if (match_tail(&t, i + 1, &s[2], &s[3], &s[4], &s[5]) < 0) {
        Py_RETURN_NONE;
    }
    return groups(line, s, 6);
}

static PyMethodDef methods[] = {
    {"split_bsd", (PyCFunction)split_bsd, METH_O, split_bsd_doc},
    {"split_iso", (PyCFunction)split_iso, METH_O, split_iso_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent.transforms._speedups",
    .m_doc = "The syslog header split in C (see agent/transforms/syslog.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModuleDef_Init(&module_def); }
