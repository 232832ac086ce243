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

#include "../_text.h"

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

/* The BSD header's spans in t (pri, stamp, mon, day, time, frac, host, prog, pid, body): 0 on a
 * match, -1 if there is none. */
static int bsd_spans(const Text *t, Span s[10]) {
    Py_ssize_t i = match_pri(t, &s[0]);
    if (i < 0) {
        return -1;
    }
    Py_ssize_t stamp = i;
    if (!is_upper(at(t, i)) || !is_lower(at(t, i + 1)) || !is_lower(at(t, i + 2)) ||
        at(t, i + 3) != ' ' || i + 3 >= t->n) {
        return -1;
    }
    s[2] = (Span){i, i + 3};
    i += 4;
    Py_UCS4 first = at(t, i);
    if ((first == ' ' || is_digit(t, i)) && i < t->n && is_digit(t, i + 1)) {
        s[3] = (Span){i, i + 2};
    } else if (is_digit(t, i)) {
        s[3] = (Span){i, i + 1};
    } else {
        return -1;
    }
    i = s[3].end;
    if (at(t, i) != ' ' || i >= t->n) {
        return -1;
    }
    i++;
    if (!is_digit(t, i) || !is_digit(t, i + 1) || at(t, i + 2) != ':' || !is_digit(t, i + 3) ||
        !is_digit(t, i + 4) || at(t, i + 5) != ':' || !is_digit(t, i + 6) ||
        !is_digit(t, i + 7)) {
        return -1;
    }
    s[4] = (Span){i, i + 8};
    i += 8;
    s[5] = NONE;
    if (at(t, i) == '.' && i < t->n) {
        Py_ssize_t d = digits(t, i + 1, 9);
        if (d < 1 || d > 9) {
            return -1;
        }
        s[5] = (Span){i + 1, i + 1 + d};
        i += 1 + d;
    }
    s[1] = (Span){stamp, i};
    if (at(t, i) != ' ' || i >= t->n) {
        return -1;
    }
    return match_tail(t, i + 1, &s[6], &s[7], &s[8], &s[9]);
}

/* The groups of a header's `spans` of line as a tuple, or None when it does not match. */
static PyObject *split_by(PyObject *line, int (*spans)(const Text *, Span *), Py_ssize_t count) {
    Text t;
    if (text_of(line, &t) < 0) {
        return NULL;
    }
    Span s[10];
    if (spans(&t, s) < 0) {
        Py_RETURN_NONE;
    }
    return groups(line, s, count);
}

static PyObject *split_bsd(PyObject *Py_UNUSED(module), PyObject *line) {
    return split_by(line, bsd_spans, 10);
}

PyDoc_STRVAR(split_iso_doc, "split_iso(line, /)\n--\n\n"
                            "_RFC3339.match(line).groups(), or None (syslog.split_iso_py).");

/* The RFC 3339 header's spans in t (pri, stamp, host, prog, pid, body): 0 on a match, -1 if
 * there is none. */
static int iso_spans(const Text *t, Span s[6]) {
    Py_ssize_t i = match_pri(t, &s[0]);
    if (i < 0) {
        return -1;
    }
    Py_ssize_t stamp = i;
    /* \d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d: 19 characters, a digit where the pattern has \d */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (Py_ssize_t k = 0; k < 19; k++) {
        Py_ssize_t p = i + k;
        if (shape[k] == 'd') {
            if (!is_digit(t, p)) {
                return -1;
            }
        } else if (shape[k] == 'T') {
            Py_UCS4 ch = at(t, p);
            if ((ch != 'T' && ch != ' ') || p >= t->n) {
                return -1;
            }
        } else if (at(t, p) != (Py_UCS4)shape[k] || p >= t->n) {
            return -1;
        }
    }
    i += 19;
    if (at(t, i) == '.' && i < t->n) {
        Py_ssize_t d = digits(t, i + 1, 9);
        if (d < 1 || d > 9) {
            return -1;
        }
        i += 1 + d;
    }
    Py_UCS4 zone = at(t, i);
    if (zone == 'Z' && i < t->n) {
        i += 1;
    } else if ((zone == '+' || zone == '-') && i < t->n) {
        if (!is_digit(t, i + 1) || !is_digit(t, i + 2)) {
            return -1;
        }
        Py_ssize_t m = at(t, i + 3) == ':' && i + 3 < t->n ? i + 4 : i + 3;
        if (!is_digit(t, m) || !is_digit(t, m + 1)) {
            return -1;
        }
        i = m + 2;
    }
    s[1] = (Span){stamp, i};
    if (at(t, i) != ' ' || i >= t->n) {
        return -1;
    }
    return match_tail(t, i + 1, &s[2], &s[3], &s[4], &s[5]);
}

static PyObject *split_iso(PyObject *Py_UNUSED(module), PyObject *line) {
    return split_by(line, iso_spans, 6);
}

/* ---- parse_batch: the syslog and auth parsers over a batch of records ----
 *
 * The reference is the Python path, record by record: TransformChain._parse with the _SyslogAuth
 * parser (SyslogParser.header and apply, then auth.parse_auth). parse_batch(records, programs,
 * slow, state) gives the commonest lines the same result without a Python call per line, and
 * hands every other record to slow(record), which is that very path. A record is done here only
 * when all of these hold (every test is made before the record is touched):
 *   - it is a dict of exactly the keys ts, src, msg and log (nothing else to merge with), its msg
 *     an exact str of printable ASCII (" " to "~"), where re's \s is " ", \w [A-Za-z0-9_] and \d
 *     [0-9], and "." and "$" meet no newline;
 *   - its header is BSD (bsd_spans) or RFC 3339 (iso_spans) without a priority, and its time
 *     is the stamp the parser cached, or: (BSD) a stamp without fraction and below second 60 in
 *     the minute it cached, while the clock reads in the month it last read; (RFC 3339) a stamp
 *     below second 60 in the minute IsoTimes cached, with the same zone text (state(): (stamp,
 *     ts, minute, minute's ts, (year, month) or None, (head, zone, prefix) or None), read again
 *     after each slow call; state(stamp, ts) first hands the parser the last stamp read here,
 *     before each slow call and at the end, so its stamp cache is where the Python path would
 *     have left it);
 *   - programs is None (the syslog format: the header only), or by programs[prog] (1 sshd, 2
 *     sudo, 3 PAM only, 4 su, 5 systemd-logind, 0 other; absent is 3, as parse_auth), the body
 *     (after ": ?" and leading spaces) is one of: (sshd) an "Accepted|Failed <method> for ..."
 *     login, an "Invalid user", "Did not receive identification string", "Received disconnect",
 *     "Disconnected from", "Connection closed|reset by" line, or one starting with a letter none
 *     of its patterns starts with (the header only); (sshd, sudo, PAM only, su) a pam_* line
 *     other than a password change; (sudo) a "<user> : ..." line; (PAM only) a body not
 *     starting "pam_" (the header only); (su, systemd-logind) any other body: auth._SU's or
 *     auth._LOGIND's match, or the header only.
 * The patterns, read from auth.py and matched here without backtracking, because none finds a
 * second way through: each greedy run is of characters that cannot follow it, so a shorter one
 * fails where the longest does. Two places do search: the login's lazy user (each " from " in
 * turn, at most 256 characters on, until the rest matches to the end) and its optional "invalid
 * user " (taken if the rest then matches, else the user starts at "invalid").
 * Returns how many records were done here.
 */

enum {
    K_TS, K_SRC, K_MSG, K_LOG, K_EVENT, K_CREATED, K_HOST, K_HOSTNAME, K_PROCESS, K_NAME, K_PID,
    K_SOURCE, K_IP, K_PORT, K_USER, K_SYSTEM, K_AUTH, K_SSH, K_METHOD, K_SIGNATURE,
    K_INVALID_USER, K_PREAUTH, K_CATEGORY, K_TYPE, K_ACTION, K_OUTCOME, K_PAM, K_MODULE,
    K_SERVICE, K_EFFECTIVE, K_ID, K_TTY, K_WORKING_DIRECTORY, K_COMMAND_LINE, K_GROUP, K_ERROR,
    K_MESSAGE, V_AUTHENTICATION, V_START, V_INFO, V_SSH_LOGIN, V_SUCCESS, V_FAILURE, V_SESSION,
    V_END, V_SESSION_OPENED, V_SESSION_CLOSED, V_PROCESS, V_SUDO_COMMAND, V_INVALID_USER,
    V_NETWORK, V_CONNECTION, V_SSH_DROPPED_CONNECTION, V_SSH_DISCONNECT, V_SSH_CLOSED, V_UNKNOWN,
    V_AUTHENTICATION_FAILURE, V_SU, V_LOGIND_SESSION_NEW, V_LOGIND_SESSION_REMOVED, N_NAMES
};
static const char *const NAME_TEXT[N_NAMES] = {
    "ts", "src", "msg", "log", "event", "created", "host", "hostname", "process", "name", "pid",
    "source", "ip", "port", "user", "system", "auth", "ssh", "method", "signature",
    "invalid_user", "preauth", "category", "type", "action", "outcome", "pam", "module",
    "service", "effective", "id", "tty", "working_directory", "command_line", "group", "error",
    "message", "authentication", "start", "info", "ssh_login", "success", "failure", "session",
    "end", "session_opened", "session_closed", "process", "sudo_command", "invalid_user",
    "network", "connection", "ssh_dropped_connection", "ssh_disconnect", "ssh_closed", "unknown",
    "authentication_failure", "su", "logind_session_new", "logind_session_removed",
};
static PyObject *NAMES[N_NAMES];

enum { P_OTHER = 0, P_SSHD = 1, P_SUDO = 2, P_PAM_ONLY = 3, P_SU = 4, P_LOGIND = 5 };
/* What a line is: the header alone, an sshd login, another sshd event (by `sshd`), a PAM line
 * (session, authentication failure, or none of auth.py's: the PAM fields alone), a sudo line. */
enum { W_HEADER, W_LOGIN, W_SSHD, W_SESSION, W_AUTHFAIL, W_PAM, W_SUDO, W_SU, W_LOGIND };
enum { S_INVALID, S_DROPPED, S_DISCONNECT, S_CLOSED };
#define MAX_ERRORS 8

typedef struct {
    Span host, prog, pid;
    int what;
    /* login */
    int ok, invalid, preauth;
    Span method, user, ip, port, sig;
    int sshd; /* W_SSHD: S_*; its user, ip and port are the login's (user and port optional) */
    /* pam: the module and service, then a session's users or a failure's key=value fields */
    int opened;
    Span mod, svc, name, by, uid, kv_user, kv_ruser, kv_logname, kv_rhost;
    /* sudo: the user alone unless `full` (a command or an error) */
    int full, nerrors;
    Span suser, tty, pwd, command, euser, egroup, errors[MAX_ERRORS];
    /* su: by (its user), name (whom it became), tty (optional), fail; logind: opened (a new
     * session), name (its user, a new one's), sid (the session's id) */
    int fail;
    Span sid;
} Plan;

static int is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int is_dig(char c) { return c >= '0' && c <= '9'; }

static int starts(const char *s, Py_ssize_t i, Py_ssize_t n, const char *word) {
    size_t k = strlen(word);
    return i <= n && (size_t)(n - i) >= k && memcmp(s + i, word, k) == 0;
}

/* The first `word` in s[i:n], or -1. */
static Py_ssize_t find(const char *s, Py_ssize_t i, Py_ssize_t n, const char *word) {
    size_t k = strlen(word);
    for (; i + (Py_ssize_t)k <= n; i++) {
        const char *hit = memchr(s + i, word[0], (size_t)(n - i));
        if (hit == NULL) {
            return -1;
        }
        i = hit - s;
        if (i + (Py_ssize_t)k <= n && memcmp(s + i, word, k) == 0) {
            return i;
        }
    }
    return -1;
}

/* login, after the user: from + "(?P<ip>[0-9A-Fa-f.:%\w-]{1,64}) port (?P<port>\d{1,5})(?: ssh\d?)?
 * (?:: (?P<sig>.*))?$" at j. */
static int login_rest(const char *s, Py_ssize_t j, Py_ssize_t n, Plan *p) {
    Py_ssize_t m = j;
    while (m < n && (is_word(s[m]) || s[m] == '.' || s[m] == ':' || s[m] == '%' || s[m] == '-')) {
        m++;
    }
    if (m == j || m - j > 64 || !starts(s, m, n, " port ")) {
        return -1;
    }
    p->ip = (Span){j, m};
    j = m + 6;
    for (m = j; m < n && is_dig(s[m]); m++) {
    }
    if (m == j || m - j > 5) {
        return -1;
    }
    p->port = (Span){j, m};
    j = m;
    if (starts(s, j, n, " ssh")) {
        j += 4;
        if (j < n && is_dig(s[j])) {
            j++;
        }
    }
    if (j == n) {
        p->sig = NONE;
        return 0;
    }
    if (starts(s, j, n, ": ")) {
        p->sig = (Span){j + 2, n};
        return 0;
    }
    return -1;
}

/* The lazy user from j: the first " from " (at most 256 characters on) the rest matches after. */
static int login_user(const char *s, Py_ssize_t j, Py_ssize_t n, Plan *p) {
    for (Py_ssize_t k = j; k <= j + 256 && k < n; k++) {
        if (s[k] == ' ' && starts(s, k, n, " from ") && login_rest(s, k + 6, n, p) == 0) {
            p->user = (Span){j, k};
            return 0;
        }
    }
    return -1;
}

/* auth._SSHD's first pattern at i (re.match, no re.S). */
static int plan_login(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t j;
    if (starts(s, i, n, "Accepted ")) {
        p->ok = 1;
        j = i + 9;
    } else if (starts(s, i, n, "Failed ")) {
        p->ok = 0;
        j = i + 7;
    } else {
        return -1;
    }
    Py_ssize_t m = j;
    while (m < n && (is_word(s[m]) || s[m] == '/' || s[m] == '-')) {
        m++;
    }
    if (m == j || !starts(s, m, n, " for ")) {
        return -1;
    }
    p->method = (Span){j, m};
    j = m + 5;
    p->invalid = starts(s, j, n, "invalid user ");
    if (p->invalid && login_user(s, j + 13, n, p) == 0) {
        return 0;
    }
    p->invalid = 0;
    return login_user(s, j, n, p);
}

/* "(?P<ip>\S+)(?: port (?P<port>\d+))?" at i (the invalid and dropped patterns' end). */
static int plan_ip_port(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t m = i;
    while (m < n && s[m] != ' ') {
        m++;
    }
    if (m == i) {
        return -1;
    }
    p->ip = (Span){i, m};
    p->port = NONE;
    if (starts(s, m, n, " port ") && m + 6 < n && is_dig(s[m + 6])) {
        Py_ssize_t d = m + 6;
        while (d < n && is_dig(s[d])) {
            d++;
        }
        if (d - (m + 6) > 18) {
            return -1; /* int(port) is no C long: Python's */
        }
        p->port = (Span){m + 6, d};
    }
    return 0;
}

/* _FROM ("(?P<ip>[0-9A-Fa-f.:%\w-]{1,64}) port (?P<port>\d{1,5})", nothing after it) at i. */
static int plan_from(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t m = i;
    while (m < n && (is_word(s[m]) || s[m] == '.' || s[m] == ':' || s[m] == '%' || s[m] == '-')) {
        m++;
    }
    if (m == i || m - i > 64 || !starts(s, m, n, " port ") || m + 6 >= n || !is_dig(s[m + 6])) {
        return -1;
    }
    p->ip = (Span){i, m};
    Py_ssize_t d = m + 6;
    while (d < n && d < m + 11 && is_dig(s[d])) {
        d++;
    }
    p->port = (Span){m + 6, d};
    return 0;
}

/* "(?:(?:authenticating |invalid )?user (?P<user>.{0,256}?) )?" then _FROM at j: with the
 * user if some length of it lets _FROM follow, else _FROM at j itself. */
static int plan_user_from(const char *s, Py_ssize_t j, Py_ssize_t n, Plan *p) {
    Py_ssize_t u = j;
    if (starts(s, j, n, "authenticating ")) {
        u += 15;
    } else if (starts(s, j, n, "invalid ")) {
        u += 8;
    }
    if (starts(s, u, n, "user ")) {
        u += 5;
        for (Py_ssize_t k = u; k <= u + 256 && k < n; k++) {
            if (s[k] == ' ' && plan_from(s, k + 1, n, p) == 0) {
                p->user = (Span){u, k};
                return 0;
            }
        }
    }
    p->user = NONE;
    return plan_from(s, j, n, p);
}

/* auth._SSHD's other patterns at i, by the body's first letter as _sshd tries them (the
 * "Connection from" pattern, which follows "closed" for "C", is left to Python). */
static int plan_sshd(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    static const char invalid[] = "Invalid user ", dropped[] =
        "Did not receive identification string from ";
    p->what = W_SSHD;
    if (starts(s, i, n, invalid)) {
        p->sshd = S_INVALID;
        Py_ssize_t u = i + (Py_ssize_t)strlen(invalid);
        for (Py_ssize_t k = u; k <= u + 256 && k < n; k++) {
            if (s[k] == ' ' && starts(s, k, n, " from ") && k + 6 < n && s[k + 6] != ' ') {
                p->user = (Span){u, k};
                return plan_ip_port(s, k + 6, n, p);
            }
        }
        return -1;
    }
    if (starts(s, i, n, dropped)) {
        p->sshd = S_DROPPED;
        p->user = NONE;
        return plan_ip_port(s, i + (Py_ssize_t)strlen(dropped), n, p);
    }
    static const char *const prefixes[] = {"Received disconnect from ", "Disconnected from ",
                                           "Connection closed by ", "Connection reset by "};
    for (int k = 0; k < 4; k++) {
        if (starts(s, i, n, prefixes[k])) {
            p->sshd = k < 2 ? S_DISCONNECT : S_CLOSED;
            return plan_user_from(s, i + (Py_ssize_t)strlen(prefixes[k]), n, p);
        }
    }
    return -1;
}

/* "\(uid=(\d+)\)" at j: where it ends (its digits in *digits), or -1. */
static Py_ssize_t uid_group(const char *s, Py_ssize_t j, Py_ssize_t n, Span *digits) {
    if (!starts(s, j, n, "(uid=")) {
        return -1;
    }
    Py_ssize_t m = j + 5;
    while (m < n && is_dig(s[m])) {
        m++;
    }
    if (m == j + 5 || m >= n || s[m] != ')') {
        return -1;
    }
    *digits = (Span){j + 5, m};
    return m + 1;
}

/* auth._PAM_SESSION at j (re.match: anything may follow). */
static int plan_session(const char *s, Py_ssize_t j, Py_ssize_t n, Plan *p) {
    if (!starts(s, j, n, "session ")) {
        return -1;
    }
    j += 8;
    if (starts(s, j, n, "opened")) {
        p->opened = 1;
    } else if (starts(s, j, n, "closed")) {
        p->opened = 0;
    } else {
        return -1;
    }
    j += 6;
    if (!starts(s, j, n, " for user ")) {
        return -1;
    }
    j += 10;
    Py_ssize_t m;
    for (m = j; m < n && s[m] != ' ' && s[m] != '('; m++) {
    }
    if (m == j) {
        return -1;
    }
    p->name = (Span){j, m};
    Span ignored;
    Py_ssize_t after = uid_group(s, m, n, &ignored);
    j = after > 0 ? after : m;
    p->by = p->uid = NONE;
    if (starts(s, j, n, " by ")) {
        j += 4;
        for (m = j; m < n && s[m] != ' ' && s[m] != '('; m++) {
        }
        p->by = (Span){j, m};
        if (uid_group(s, m, n, &p->uid) < 0) {
            p->uid = NONE;
        }
    }
    return 0;
}

/* dict(auth._PAM_KV.findall(s[j:n])): the last value of user, ruser, logname and rhost. A match
 * is a whole run of word characters, "=" and the run of non-spaces after it; findall goes on
 * after that, and past a run of word characters that no "=" follows. */
static void plan_kv(const char *s, Py_ssize_t j, Py_ssize_t n, Plan *p) {
    p->kv_user = p->kv_ruser = p->kv_logname = p->kv_rhost = NONE;
    while (j < n) {
        if (!is_word(s[j])) {
            j++;
            continue;
        }
        Py_ssize_t q = j;
        while (q < n && is_word(s[q])) {
            q++;
        }
        if (q >= n || s[q] != '=') {
            j = q;
            continue;
        }
        Py_ssize_t v = q + 1, r = v;
        while (r < n && s[r] != ' ') {
            r++;
        }
        static const char *const keys[] = {"user", "ruser", "logname", "rhost"};
        Span *slots[] = {&p->kv_user, &p->kv_ruser, &p->kv_logname, &p->kv_rhost};
        for (int k = 0; k < 4; k++) {
            if ((size_t)(q - j) == strlen(keys[k]) && memcmp(s + j, keys[k], (size_t)(q - j)) == 0) {
                *slots[k] = (Span){v, r};
            }
        }
        j = r;
    }
}

/* auth._pam at i: _PAM, then a session, an authentication failure or (not a password change,
 * left to Python) nothing more. */
static int plan_pam(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    if (!starts(s, i, n, "pam_")) {
        return -1;
    }
    Py_ssize_t j = i + 4, m = j;
    while (m < n && is_word(s[m])) {
        m++;
    }
    if (m == j || m >= n || s[m] != '(') {
        return -1;
    }
    p->mod = (Span){i, m}; /* "pam_" and the module name */
    j = m + 1;
    for (m = j; m < n && s[m] != ':' && s[m] != '(' && s[m] != ')'; m++) {
    }
    if (m == j || m >= n || s[m] != ':') {
        return -1;
    }
    p->svc = (Span){j, m};
    j = m + 1;
    for (m = j; m < n && is_word(s[m]); m++) {
    }
    if (m == j || !starts(s, m, n, "): ")) {
        return -1;
    }
    j = m + 3;
    if (plan_session(s, j, n, p) == 0) {
        p->what = W_SESSION;
    } else if (starts(s, j, n, "authentication failure")) {
        p->what = W_AUTHFAIL;
        plan_kv(s, j, n, p);
    } else if (starts(s, j, n, "password changed for ") || starts(s, j, n, "password for ")) {
        return -1;
    } else {
        p->what = W_PAM;
    }
    return 0;
}

/* The end of the run of characters from j that are none of `stop` (memchr, not strchr: a NUL
 * byte is no stop, though the lines planned here hold none). */
static Py_ssize_t run_to(const char *s, Py_ssize_t j, Py_ssize_t n, const char *stop) {
    size_t stops = strlen(stop);
    while (j < n && memchr(stop, s[j], stops) == NULL) {
        j++;
    }
    return j;
}

/* The end of a non-empty run from j of characters none of `stop`, if `lit` follows it; else -1. */
static Py_ssize_t run_before(const char *s, Py_ssize_t j, Py_ssize_t n, const char *stop,
                             const char *lit) {
    Py_ssize_t m = run_to(s, j, n, stop);
    return m > j && starts(s, m, n, lit) ? m : -1;
}

/* auth._SU at i (re.match: anything may follow), not a pam_ line: 0 planned, 1 not a match (the
 * header alone). An optional "FAILED SU", "FAILED su" or "Successful su" and an optional space,
 * then "for <to> by <by>" or "(to <to>) <by> on <tty>". No backtracking finds another way: the
 * prefix, when there, is the only one (the rest cannot start with its letter), and each run
 * ends at a character its next literal starts with, which the run cannot hold. */
static int plan_su(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t j = i, m, k;
    p->fail = starts(s, j, n, "FAILED SU") || starts(s, j, n, "FAILED su");
    if (p->fail) {
        j += 9;
    } else if (starts(s, j, n, "Successful su")) {
        j += 13;
    }
    if (j < n && s[j] == ' ') {
        j++;
    }
    p->tty = NONE;
    if (starts(s, j, n, "for ") && (m = run_before(s, j + 4, n, " ", " by ")) >= 0) {
        p->name = (Span){j + 4, m};
        p->by = (Span){m + 4, run_to(s, m + 4, n, " ")};
    } else if (starts(s, j, n, "(to ") && (m = run_before(s, j + 4, n, ")", ") ")) >= 0 &&
               (k = run_before(s, m + 2, n, " ", " on ")) >= 0) {
        p->name = (Span){j + 4, m};
        p->by = (Span){m + 2, k};
        p->tty = (Span){k + 4, run_to(s, k + 4, n, " ")};
    } else {
        return 1;
    }
    if (p->by.end == p->by.start || (p->tty.start >= 0 && p->tty.end == p->tty.start)) {
        return 1;
    }
    p->what = W_SU;
    return 0;
}

/* auth._LOGIND at i (re.match: anything may follow): 0 planned, 1 not a match (the header
 * alone). "New session <id> of user <user>", "Removed session <id>" or "Session <id> logged
 * out"; as in plan_su, each run ends where its next literal must start. */
static int plan_logind(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t m;
    p->name = NONE;
    p->opened = 0;
    if (starts(s, i, n, "New session ") && (m = run_before(s, i + 12, n, " ", " of user ")) >= 0) {
        p->sid = (Span){i + 12, m};
        p->name = (Span){m + 9, run_to(s, m + 9, n, " .")};
        p->opened = 1;
    } else if (starts(s, i, n, "Removed session ")) {
        p->sid = (Span){i + 16, run_to(s, i + 16, n, " .")};
    } else if (starts(s, i, n, "Session ") &&
               (m = run_before(s, i + 8, n, " ", " logged out")) >= 0) {
        p->sid = (Span){i + 8, m};
    } else {
        return 1;
    }
    if (p->sid.end == p->sid.start || (p->opened && p->name.end == p->name.start)) {
        return 1;
    }
    p->what = W_LOGIND;
    return 0;
}

/* auth._sudo at i, not a pam_ line: "<user> : <rest>", rest's " ; " parts and its COMMAND=. */
static int plan_sudo(const char *s, Py_ssize_t i, Py_ssize_t n, Plan *p) {
    Py_ssize_t m = i;
    while (m < n && s[m] != ' ') {
        m++;
    }
    if (m == i || !starts(s, m, n, " : ")) {
        return -1;
    }
    p->suser = (Span){i, m};
    Py_ssize_t a = m + 3, end = n;
    Py_ssize_t c = find(s, a, n, "COMMAND=");
    p->command = NONE;
    if (c >= 0) {
        p->command = (Span){c + 8, n};
        end = c;
    }
    p->tty = p->pwd = p->euser = p->egroup = NONE;
    p->nerrors = 0;
    for (;;) {
        Py_ssize_t sep = find(s, a, end, " ; ");
        Py_ssize_t x = a, y = sep >= 0 ? sep : end;
        while (x < y && s[x] == ' ') {
            x++;
        }
        while (y > x && s[y - 1] == ' ') {
            y--;
        }
        const char *eq = memchr(s + x, '=', (size_t)(y - x));
        int known = 0;
        if (eq != NULL) {
            Py_ssize_t k = eq - s - x;
            Span value = {eq - s + 1, y};
            static const char *const keys[] = {"TTY", "PWD", "USER", "GROUP", "ENV", "CHROOT",
                                               "CWD"};
            for (int w = 0; w < 7 && !known; w++) {
                if ((size_t)k == strlen(keys[w]) && memcmp(s + x, keys[w], (size_t)k) == 0) {
                    known = 1;
                    Span *slot[] = {&p->tty, &p->pwd, &p->euser, &p->egroup, NULL, NULL, NULL};
                    if (slot[w] != NULL) {
                        *slot[w] = value;
                    }
                }
            }
        }
        if (!known && y > x) {
            if (p->nerrors == MAX_ERRORS) {
                return -1;
            }
            p->errors[p->nerrors++] = (Span){x, y};
        }
        if (sep < 0) {
            break;
        }
        a = sep + 3;
    }
    p->full = p->command.start >= 0 || p->nerrors > 0;
    return 0;
}

/* SyslogParser's caches, from state(). */
typedef struct {
    PyObject *tuple; /* owns what follows */
    PyObject *stamp, *ts, *minute_ts;
    long minute[3]; /* year, month, day */
    const char *minute_hm; /* "HH:MM" */
    int has_minute;
    long year, month;
    int has_month;
    PyObject *iso_head, *iso_zone, *iso_prefix; /* IsoTimes' minute, or NULL */
} State;

static int ascii_str(PyObject *o) { return PyUnicode_CheckExact(o) && PyUnicode_IS_ASCII(o); }

static int load_state(PyObject *fn, State *st) {
    Py_CLEAR(st->tuple);
    PyObject *t = PyObject_CallNoArgs(fn);
    if (t == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 6) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "state() must return a 6-tuple");
        return -1;
    }
    st->tuple = t;
    st->stamp = PyTuple_GET_ITEM(t, 0);
    st->ts = PyTuple_GET_ITEM(t, 1);
    PyObject *minute = PyTuple_GET_ITEM(t, 2);
    st->minute_ts = PyTuple_GET_ITEM(t, 3);
    PyObject *month = PyTuple_GET_ITEM(t, 4);
    st->has_minute = PyTuple_CheckExact(minute) && PyTuple_GET_SIZE(minute) == 5 &&
                     ascii_str(st->minute_ts) && ascii_str(PyTuple_GET_ITEM(minute, 3)) &&
                     PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(minute, 3)) == 5;
    for (int k = 0; k < 3 && st->has_minute; k++) {
        PyObject *v = PyTuple_GET_ITEM(minute, k);
        st->has_minute = PyLong_CheckExact(v);
        if (st->has_minute) {
            st->minute[k] = PyLong_AsLong(v);
            if (st->minute[k] == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                st->has_minute = 0;
            }
        }
    }
    if (st->has_minute) {
        st->minute_hm = (const char *)PyUnicode_1BYTE_DATA(PyTuple_GET_ITEM(minute, 3));
    }
    st->has_month = PyTuple_CheckExact(month) && PyTuple_GET_SIZE(month) == 2 &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(month, 0)) &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(month, 1));
    PyObject *iso = PyTuple_GET_ITEM(t, 5);
    st->iso_head = st->iso_zone = st->iso_prefix = NULL;
    if (PyTuple_CheckExact(iso) && PyTuple_GET_SIZE(iso) == 3 &&
        ascii_str(PyTuple_GET_ITEM(iso, 0)) && PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(iso, 0)) == 17 &&
        ascii_str(PyTuple_GET_ITEM(iso, 1)) && ascii_str(PyTuple_GET_ITEM(iso, 2))) {
        st->iso_head = PyTuple_GET_ITEM(iso, 0);
        st->iso_zone = PyTuple_GET_ITEM(iso, 1);
        st->iso_prefix = PyTuple_GET_ITEM(iso, 2);
    }
    if (st->has_month) {
        st->year = PyLong_AsLong(PyTuple_GET_ITEM(month, 0));
        st->month = PyLong_AsLong(PyTuple_GET_ITEM(month, 1));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            st->has_month = 0;
        }
    }
    return 0;
}

/* The decimal digits s[sp] (at most 18: no overflow). */
static long long number(const char *s, Span sp) {
    long long v = 0;
    for (Py_ssize_t i = sp.start; i < sp.end; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* prefix (a minute's UTC text, ASCII) + "SS.ffffffZ": the two digits at sec, then the first
 * six of the nfrac fraction digits at frac, padded with zeros (syslog.seconds_text). */
static PyObject *with_seconds(PyObject *prefix, const char *sec, const char *frac,
                              Py_ssize_t nfrac) {
    Py_ssize_t head = PyUnicode_GET_LENGTH(prefix);
    PyObject *ts = PyUnicode_New(head + 10, 127);
    if (ts == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(ts);
    memcpy(out, PyUnicode_1BYTE_DATA(prefix), (size_t)head);
    out[head] = sec[0];
    out[head + 1] = sec[1];
    out[head + 2] = '.';
    for (Py_ssize_t k = 0; k < 6; k++) {
        out[head + 3 + k] = k < nfrac ? frac[k] : '0';
    }
    out[head + 9] = 'Z';
    return ts;
}

/* The ts of a stamp s[a:b] that is not the cached one, by SyslogParser._naive_to_ts's usual
 * way (the cached minute), or NULL (no exception) when that does not apply. */
static PyObject *minute_ts(const State *st, const char *s, const Span *b) {
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (!st->has_minute || !st->has_month || b[5].start >= 0) {
        return NULL;
    }
    long month = 0;
    for (int k = 0; k < 12; k++) {
        if (memcmp(s + b[2].start, months + 3 * k, 3) == 0) {
            month = k + 1;
        }
    }
    if (month == 0) {
        return NULL;
    }
    Span day = b[3];
    if (s[day.start] == ' ') {
        day.start++;
    }
    long d = (long)number(s, day), year = st->year;
    if (month > st->month + 1) {
        year -= 1;
    } else if (month == 1 && st->month == 12 && d == 1) {
        year += 1;
    }
    const char *hms = s + b[4].start;
    if (year != st->minute[0] || month != st->minute[1] || d != st->minute[2] ||
        memcmp(hms, st->minute_hm, 5) != 0 || hms[6] >= '6') {
        return NULL;
    }
    return with_seconds(st->minute_ts, hms + 6, "", 0);
}

/* The ts of an RFC 3339 stamp s[a:b] that is not the cached one, as IsoTimes.to_utc gives it
 * from its cached minute (same text up to the minute, same zone text): the minute's UTC prefix,
 * then seconds_text (the fraction cut or padded to 6 digits); NULL (no exception) otherwise. */
static PyObject *iso_ts(const State *st, const char *s, Span stamp) {
    if (st->iso_head == NULL || stamp.end - stamp.start < 19 ||
        memcmp(s + stamp.start, PyUnicode_1BYTE_DATA(st->iso_head), 17) != 0) {
        return NULL;
    }
    const char *sec = s + stamp.start + 17;
    if (sec[0] >= '6') {
        return NULL; /* second 60 and up: not a time */
    }
    Py_ssize_t i = stamp.start + 19, frac = i, nfrac = 0;
    if (i < stamp.end && s[i] == '.') {
        frac = i + 1;
        for (i = frac; i < stamp.end && is_dig(s[i]); i++) {
        }
        nfrac = i - frac;
    }
    Py_ssize_t zone = stamp.end - i;
    if (zone != PyUnicode_GET_LENGTH(st->iso_zone) ||
        memcmp(s + i, PyUnicode_1BYTE_DATA(st->iso_zone), (size_t)zone) != 0) {
        return NULL;
    }
    return with_seconds(st->iso_prefix, sec, s + frac, nfrac);
}

/* d[key] = v, v's reference taken (NULL: -1, as its maker failed). */
static int put(PyObject *d, int key, PyObject *v) {
    if (v == NULL) {
        return -1;
    }
    int r = PyDict_SetItem(d, NAMES[key], v);
    Py_DECREF(v);
    return r;
}

static int put_text(PyObject *d, int key, PyObject *line, Span sp) {
    return put(d, key, PyUnicode_Substring(line, sp.start, sp.end));
}

/* d[key] = {} (borrowed: d holds it), or NULL. */
static PyObject *child(PyObject *d, int key) {
    PyObject *c = PyDict_New();
    if (put(d, key, c) < 0) {
        return NULL;
    }
    return c;
}

static PyObject *one(int name) {
    PyObject *list = PyList_New(1);
    if (list != NULL) {
        PyList_SET_ITEM(list, 0, Py_NewRef(NAMES[name]));
    }
    return list;
}

static int put_event(PyObject *event, int category, int type, int action, int outcome) {
    if (put(event, K_CATEGORY, one(category)) < 0 || put(event, K_TYPE, one(type)) < 0 ||
        PyDict_SetItem(event, NAMES[K_ACTION], NAMES[action]) < 0) {
        return -1;
    }
    return PyDict_SetItem(event, NAMES[K_OUTCOME], NAMES[outcome]);
}

/* The errors' texts joined by " ; ". */
static PyObject *joined(PyObject *line, const char *s, const Plan *p) {
    if (p->nerrors == 1) {
        return PyUnicode_Substring(line, p->errors[0].start, p->errors[0].end);
    }
    Py_ssize_t size = 3 * (p->nerrors - 1);
    for (int k = 0; k < p->nerrors; k++) {
        size += p->errors[k].end - p->errors[k].start;
    }
    PyObject *out = PyUnicode_New(size, 127);
    if (out == NULL) {
        return NULL;
    }
    char *w = (char *)PyUnicode_1BYTE_DATA(out);
    for (int k = 0; k < p->nerrors; k++) {
        if (k > 0) {
            memcpy(w, " ; ", 3);
            w += 3;
        }
        Py_ssize_t len = p->errors[k].end - p->errors[k].start;
        memcpy(w, s + p->errors[k].start, (size_t)len);
        w += len;
    }
    return out;
}

/* What a plan puts in its record besides the header's fields (auth.parse_auth's choices, made
 * once for the two writers: apply_plan's dicts and encode_run's JSON). A span with start < 0 is
 * absent. */
typedef struct {
    int event[4];   /* category, type, action, outcome (NAMES); event[0] < 0: created alone */
    int source;     /* source: ip, then port when present */
    Span ip, port;
    Span user, effective, id; /* user.name (absent: no user), user.effective.name, user.id */
    int ssh;        /* system.auth.ssh: 0 none, 1 the login's members, 2 preauth alone */
    int pam;        /* system.auth.pam: module, service */
    int sudo;       /* a sudo command's: error, group, working directory, command line */
    Span tty;       /* process.tty.name: a sudo command's, an su's */
    Span session;   /* system.auth.session.id: a logind session's */
} Fields;

static void fields_of(const Plan *p, Fields *f) {
    static const Span none = {-1, -1};
    static const int sshd_events[4][4] = {
        {V_AUTHENTICATION, V_INFO, V_INVALID_USER, V_FAILURE},
        {V_NETWORK, V_CONNECTION, V_SSH_DROPPED_CONNECTION, V_FAILURE},
        {V_SESSION, V_END, V_SSH_DISCONNECT, V_UNKNOWN},
        {V_SESSION, V_END, V_SSH_CLOSED, V_UNKNOWN},
    };
    *f = (Fields){.event = {-1, -1, -1, -1}, .ip = none, .port = none, .user = none,
                  .effective = none, .id = none, .tty = none, .session = none};
    switch (p->what) {
    case W_LOGIN:
    case W_SSHD: {
        if (p->what == W_LOGIN) {
            int e[4] = {V_AUTHENTICATION, p->ok ? V_START : V_INFO, V_SSH_LOGIN,
                        p->ok ? V_SUCCESS : V_FAILURE};
            memcpy(f->event, e, sizeof e);
            f->ssh = 1;
        } else {
            memcpy(f->event, sshd_events[p->sshd], sizeof f->event);
            f->ssh = p->preauth ? 2 : 0;
        }
        f->source = 1;
        f->ip = p->ip;
        f->port = p->port;
        if (p->user.start >= 0 && p->user.end > p->user.start) {
            f->user = p->user;
        }
        break;
    }
    case W_AUTHFAIL: {
        int e[4] = {V_AUTHENTICATION, V_INFO, V_AUTHENTICATION_FAILURE, V_FAILURE};
        memcpy(f->event, e, sizeof e);
        f->pam = 1;
        const Span *names[] = {&p->kv_user, &p->kv_ruser, &p->kv_logname};
        for (int k = 0; k < 3 && f->user.start < 0; k++) {
            if (names[k]->end > names[k]->start) {
                f->user = *names[k];
            }
        }
        if (p->kv_rhost.end > p->kv_rhost.start) {
            f->source = 1;
            f->ip = p->kv_rhost;
        }
        break;
    }
    case W_SESSION: {
        int e[4] = {V_SESSION, p->opened ? V_START : V_END,
                    p->opened ? V_SESSION_OPENED : V_SESSION_CLOSED, V_SUCCESS};
        memcpy(f->event, e, sizeof e);
        f->pam = 1;
        if (p->by.end > p->by.start) {
            f->user = p->by;
            f->effective = p->name;
            f->id = p->uid;
        } else {
            f->user = p->name;
        }
        break;
    }
    case W_PAM:
        f->pam = 1;
        break;
    case W_SUDO:
        f->user = p->suser;
        if (p->full) {
            int e[4] = {V_PROCESS, V_START, V_SUDO_COMMAND,
                        p->nerrors > 0 ? V_FAILURE : V_SUCCESS};
            memcpy(f->event, e, sizeof e);
            f->sudo = 1;
            f->effective = p->euser;
            f->tty = p->tty;
        }
        break;
    case W_SU: {
        int e[4] = {V_AUTHENTICATION, V_START, V_SU, p->fail ? V_FAILURE : V_SUCCESS};
        memcpy(f->event, e, sizeof e);
        f->user = p->by;
        f->effective = p->name;
        f->tty = p->tty;
        break;
    }
    case W_LOGIND: {
        int e[4] = {V_SESSION, p->opened ? V_START : V_END,
                    p->opened ? V_LOGIND_SESSION_NEW : V_LOGIND_SESSION_REMOVED, V_SUCCESS};
        memcpy(f->event, e, sizeof e);
        f->user = p->name;
        f->session = p->sid;
        break;
    }
    default: /* W_HEADER: the header's fields alone */
        break;
    }
}

/* d[key] = {"name": s[sp]}: the ECS "name" objects (user.effective, tty, group.effective). */
static int put_named(PyObject *d, int key, PyObject *line, Span sp) {
    PyObject *c = child(d, key);
    return c == NULL ? -1 : put_text(c, K_NAME, line, sp);
}

static int apply_plan(PyObject *rec, PyObject *line, const char *s, const Plan *p, PyObject *ts,
                      PyObject *prog) {
    Fields f;
    fields_of(p, &f);
    /* SyslogParser.apply */
    PyObject *read = PyDict_GetItemWithError(rec, NAMES[K_TS]);
    if (read == NULL) {
        return -1;
    }
    PyObject *event = child(rec, K_EVENT);
    if (event == NULL || PyDict_SetItem(event, NAMES[K_CREATED], read) < 0 ||
        PyDict_SetItem(rec, NAMES[K_TS], ts) < 0) {
        return -1;
    }
    if (p->host.start >= 0) {
        PyObject *host = child(rec, K_HOST);
        if (host == NULL || put_text(host, K_HOSTNAME, line, p->host) < 0) {
            return -1;
        }
    }
    PyObject *process = child(rec, K_PROCESS);
    if (process == NULL || PyDict_SetItem(process, NAMES[K_NAME], prog) < 0) {
        return -1;
    }
    if (p->pid.start >= 0 && put(process, K_PID, PyLong_FromLongLong(number(s, p->pid))) < 0) {
        return -1;
    }
    /* auth.parse_auth */
    if (f.event[0] >= 0 && put_event(event, f.event[0], f.event[1], f.event[2], f.event[3]) < 0) {
        return -1;
    }
    if (f.source) {
        PyObject *source = child(rec, K_SOURCE);
        if (source == NULL || put_text(source, K_IP, line, f.ip) < 0 ||
            (f.port.start >= 0 &&
             put(source, K_PORT, PyLong_FromLongLong(number(s, f.port))) < 0)) {
            return -1;
        }
    }
    if (f.user.start >= 0) {
        PyObject *user = child(rec, K_USER);
        if (user == NULL || put_text(user, K_NAME, line, f.user) < 0 ||
            (f.effective.start >= 0 && put_named(user, K_EFFECTIVE, line, f.effective) < 0) ||
            (f.id.start >= 0 && put_text(user, K_ID, line, f.id) < 0)) {
            return -1;
        }
    }
    if (f.ssh || f.pam) {
        PyObject *system = child(rec, K_SYSTEM);
        PyObject *auth = system == NULL ? NULL : child(system, K_AUTH);
        PyObject *kind = auth == NULL ? NULL : child(auth, f.ssh ? K_SSH : K_PAM);
        if (kind == NULL) {
            return -1;
        }
        if (f.pam && (put_text(kind, K_MODULE, line, p->mod) < 0 ||
                      put_text(kind, K_SERVICE, line, p->svc) < 0)) {
            return -1;
        }
        if (f.ssh == 1 && (put_text(kind, K_METHOD, line, p->method) < 0 ||
                           (p->sig.start >= 0 && p->sig.end > p->sig.start &&
                            put_text(kind, K_SIGNATURE, line, p->sig) < 0) ||
                           (p->invalid && PyDict_SetItem(kind, NAMES[K_INVALID_USER], Py_True) < 0))) {
            return -1;
        }
        if (f.ssh && p->preauth && PyDict_SetItem(kind, NAMES[K_PREAUTH], Py_True) < 0) {
            return -1;
        }
    }
    if (f.session.start >= 0) {
        PyObject *system = child(rec, K_SYSTEM);
        PyObject *auth = system == NULL ? NULL : child(system, K_AUTH);
        PyObject *session = auth == NULL ? NULL : child(auth, V_SESSION);
        if (session == NULL || put_text(session, K_ID, line, f.session) < 0) {
            return -1;
        }
    }
    if (f.tty.start >= 0 && put_named(process, K_TTY, line, f.tty) < 0) {
        return -1;
    }
    if (f.sudo) {
        if ((p->pwd.start >= 0 && put_text(process, K_WORKING_DIRECTORY, line, p->pwd) < 0) ||
            (p->command.start >= 0 && put_text(process, K_COMMAND_LINE, line, p->command) < 0)) {
            return -1;
        }
        if (p->egroup.start >= 0) {
            PyObject *group = child(rec, K_GROUP);
            if (group == NULL || put_named(group, K_EFFECTIVE, line, p->egroup) < 0) {
                return -1;
            }
        }
        if (p->nerrors > 0) {
            PyObject *error = child(rec, K_ERROR);
            if (error == NULL || put(error, K_MESSAGE, joined(line, s, p)) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Whether msg is printable ASCII and rec a dict of exactly ts, src, msg and log. */
static int plain(PyObject *rec, PyObject *msg) {
    if (PyDict_GET_SIZE(rec) != 4 || !ascii_str(msg)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(msg);
    if (printable_prefix(PyUnicode_1BYTE_DATA(msg), n) != n) {
        return 0;
    }
    return PyDict_Contains(rec, NAMES[K_TS]) == 1 && PyDict_Contains(rec, NAMES[K_SRC]) == 1 &&
           PyDict_Contains(rec, NAMES[K_LOG]) == 1;
}

/* The plan for the body at i by the program's code; -1 when the line is not done here. */
static int plan_body(const char *s, Py_ssize_t i, Py_ssize_t n, long code, Plan *p) {
    int pam = starts(s, i, n, "pam_");
    if (code == P_PAM_ONLY && !pam) {
        p->what = W_HEADER;
        return 0;
    }
    if (pam && (code == P_SSHD || code == P_SUDO || code == P_PAM_ONLY || code == P_SU)) {
        return plan_pam(s, i, n, p);
    }
    if (code == P_SU || code == P_LOGIND) {
        if ((code == P_SU ? plan_su(s, i, n, p) : plan_logind(s, i, n, p)) != 0) {
            p->what = W_HEADER; /* not one of its patterns: the header's fields alone */
        }
        return 0;
    }
    if (code == P_SSHD) {
        /* _sshd tries the patterns of the body's first letter ("AFIDRC"), none for another */
        if (i >= n || strchr("AFIDRC", s[i]) == NULL) {
            p->what = W_HEADER;
            return 0;
        }
        if (s[i] == 'A' || s[i] == 'F') {
            p->what = W_LOGIN;
            if (plan_login(s, i, n, p) < 0) {
                return -1;
            }
        } else if (plan_sshd(s, i, n, p) < 0) {
            return -1;
        }
        p->preauth = n - i >= 9 && memcmp(s + n - 9, "[preauth]", 9) == 0;
        return 0;
    }
    if (code == P_SUDO) {
        p->what = W_SUDO;
        return plan_sudo(s, i, n, p);
    }
    return -1;
}

/* The plan and time of the line t (printable ASCII, kind 1): 1 planned (*ts and *prog are new
 * references: the line's ts and its program name), 0 not done here (nothing made, the caches
 * untouched), -1 error. *cur_stamp / *cur_ts are the last stamp seen and its ts (owned);
 * *last_prog the last program name made (owned, or NULL), reused while lines repeat it. */
static int plan_line(const Text *t, PyObject *programs, const State *st, PyObject **cur_stamp,
                     PyObject **cur_ts, PyObject **last_prog, Plan *p, PyObject **ts_out,
                     PyObject **prog_out) {
    const char *s = (const char *)t->data;
    Py_ssize_t n = t->n;
    /* SyslogParser.header: a line starting with a digit is RFC 3339 or nothing, else BSD */
    int iso = n > 0 && is_dig(s[0]);
    Span b[10], stamp;
    if (iso) {
        Span h[6];
        if (iso_spans(t, h) < 0 || h[0].start >= 0) {
            return 0;
        }
        stamp = h[1];
        p->host = h[2];
        p->prog = h[3];
        p->pid = h[4];
        b[9] = h[5];
    } else {
        if (bsd_spans(t, b) < 0 || b[0].start >= 0) {
            return 0;
        }
        stamp = b[1];
        p->host = b[6];
        p->prog = b[7];
        p->pid = b[8];
    }
    Py_ssize_t body = b[9].start;
    while (body < n && s[body] == ' ') {
        body++;
    }
    Py_ssize_t prog_len = p->prog.end - p->prog.start;
    if (*last_prog == NULL || PyUnicode_GET_LENGTH(*last_prog) != prog_len ||
        memcmp(PyUnicode_1BYTE_DATA(*last_prog), s + p->prog.start, (size_t)prog_len) != 0) {
        PyObject *made = PyUnicode_DecodeASCII(s + p->prog.start, prog_len, NULL);
        if (made == NULL) {
            return -1;
        }
        Py_XSETREF(*last_prog, made);
    }
    if (programs == Py_None) {
        p->what = W_HEADER;
    } else {
        long code = P_PAM_ONLY;
        PyObject *found = PyDict_GetItemWithError(programs, *last_prog);
        if (found != NULL) {
            code = PyLong_AsLong(found);
        }
        if (PyErr_Occurred() || plan_body(s, body, n, code, p) < 0) {
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    /* The time: the last stamp's, or one in the cached minute. */
    Py_ssize_t len = stamp.end - stamp.start;
    PyObject *ts = NULL;
    if (PyUnicode_GET_LENGTH(*cur_stamp) == len &&
        memcmp(PyUnicode_1BYTE_DATA(*cur_stamp), s + stamp.start, (size_t)len) == 0) {
        ts = Py_NewRef(*cur_ts);
    } else {
        ts = iso ? iso_ts(st, s, stamp) : minute_ts(st, s, b);
        if (ts == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        PyObject *text = PyUnicode_DecodeASCII(s + stamp.start, len, NULL);
        if (text == NULL) {
            Py_DECREF(ts);
            return -1;
        }
        Py_SETREF(*cur_stamp, text);
        Py_SETREF(*cur_ts, Py_NewRef(ts));
    }
    *ts_out = ts;
    *prog_out = Py_NewRef(*last_prog);
    return 1;
}

/* One record: 1 done, 0 not done here (untouched), -1 error. */
static int parse_one(PyObject *rec, PyObject *programs, const State *st, PyObject **cur_stamp,
                     PyObject **cur_ts, PyObject **last_prog) {
    if (!PyDict_CheckExact(rec)) {
        return 0;
    }
    PyObject *line = PyDict_GetItemWithError(rec, NAMES[K_MSG]);
    if (line == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!plain(rec, line)) {
        return 0;
    }
    Text t = {PyUnicode_KIND(line), PyUnicode_DATA(line), PyUnicode_GET_LENGTH(line)};
    Plan p;
    PyObject *ts = NULL, *prog = NULL;
    int r = plan_line(&t, programs, st, cur_stamp, cur_ts, last_prog, &p, &ts, &prog);
    if (r <= 0) {
        return r;
    }
    r = apply_plan(rec, line, (const char *)t.data, &p, ts, prog);
    Py_DECREF(ts);
    Py_DECREF(prog);
    return r < 0 ? -1 : 1;
}

PyDoc_STRVAR(parse_batch_doc,
             "parse_batch(records, programs, slow, state, /)\n--\n\n"
             "Parse each record of the list as the syslog (programs None) or auth parser does;\n"
             "slow(record) parses those it does not. Returns how many it parsed itself.");

static PyObject *parse_batch(PyObject *Py_UNUSED(module), PyObject *const *args,
                             Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) ||
        (args[1] != Py_None && !PyDict_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_batch(records: list, programs: dict | None, slow, state)");
        return NULL;
    }
    PyObject *records = args[0], *programs = args[1], *slow = args[2], *state = args[3];
    State st = {0};
    if (load_state(state, &st) < 0) {
        return NULL;
    }
    PyObject *cur_stamp = NULL, *cur_ts = NULL, *last_prog = NULL;
    Py_ssize_t done = 0;
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records) && !failed; i++) {
        if (cur_stamp == NULL) { /* the parser's own cache, (re)read */
            if (ascii_str(st.stamp) && PyUnicode_CheckExact(st.ts)) {
                cur_stamp = Py_NewRef(st.stamp);
                cur_ts = Py_NewRef(st.ts);
            } else {
                cur_stamp = PyUnicode_New(0, 127);
                cur_ts = Py_NewRef(Py_None);
                if (cur_stamp == NULL) {
                    failed = 1;
                    break;
                }
            }
        }
        PyObject *rec = Py_NewRef(PyList_GET_ITEM(records, i));
        int r = parse_one(rec, programs, &st, &cur_stamp, &cur_ts, &last_prog);
        if (r == 1) {
            done++;
        } else if (r == 0) {
            /* The parser's stamp cache first takes the last stamp read here, as the Python
             * path would have left it; then the record goes there; then the caches are read
             * back, as it may have changed them. */
            PyObject *out = PyObject_CallFunctionObjArgs(state, cur_stamp, cur_ts, NULL);
            if (out != NULL) {
                Py_SETREF(out, PyObject_CallOneArg(slow, rec));
            }
            Py_XDECREF(out);
            Py_CLEAR(cur_stamp);
            Py_CLEAR(cur_ts);
            failed = out == NULL || load_state(state, &st) < 0;
        } else {
            failed = 1;
        }
        Py_DECREF(rec);
    }
    if (!failed && cur_stamp != NULL) { /* the last stamp read here, to the parser's cache */
        PyObject *out = PyObject_CallFunctionObjArgs(state, cur_stamp, cur_ts, NULL);
        failed = out == NULL;
        Py_XDECREF(out);
    }
    Py_XDECREF(cur_stamp);
    Py_XDECREF(cur_ts);
    Py_XDECREF(last_prog);
    Py_XDECREF(st.tuple);
    return failed ? NULL : PyLong_FromSsize_t(done);
}

/* ---- encode_run: the same records, written as their canonical JSON ----
 *
 * encode_run(data, begin, end, offset, programs, state, created, log_head, src) walks the lines
 * of data[begin:end] (each ending in "\n", as a PlainRun's) and, for each line parse_batch would
 * do itself (printable ASCII, planned, its time known from the caches), writes the record that
 * path makes of the run's record for it ({"ts", "src", "msg", "log"}: sources.PlainRun.line) in
 * its canonical JSON, orjson's with sorted keys, but for its "seq". It stops before the first
 * line it does not do (or at end) and returns (blob, at, count): the records written, where it
 * stopped, how many. blob holds, per record, a 16-byte head (little endian: u32 length before
 * seq, u32 length after it, u64 the file offset just after its line) then the JSON up to the
 * place of "seq":N, and the JSON after it: sources.EncodedRun reads it, buffer/chain.link
 * frames it. created, log_head and src are JSON the caller made: the run's read time (event.created),
 * '{"file":{"path":<path>},"offset":' and the source name. The stamp cache is read (state())
 * at the start and handed back (state(stamp, ts)) at the end, as parse_batch does around its
 * slow calls. Keys are written in sorted order by hand: tests hold every record to orjson's
 * encoding of the record parse_batch makes. */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Writer;

static int w_room(Writer *w, Py_ssize_t more) {
    if (w->len + more <= w->cap) {
        return 0;
    }
    Py_ssize_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + more) {
        cap *= 2;
    }
    char *grown = PyMem_Realloc(w->buf, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->buf = grown;
    w->cap = cap;
    return 0;
}

static int w_raw(Writer *w, const char *text, Py_ssize_t n) {
    if (w_room(w, n) < 0) {
        return -1;
    }
    memcpy(w->buf + w->len, text, (size_t)n);
    w->len += n;
    return 0;
}

#define W_LIT(w, text) w_raw((w), (text), (Py_ssize_t)(sizeof(text) - 1))

/* Printable ASCII s[sp] inside a JSON string: only '"' and '\\' are escaped (as orjson does). */
static int w_escaped(Writer *w, const char *s, Span sp) {
    Py_ssize_t n = sp.end - sp.start;
    if (w_room(w, 2 * n) < 0) {
        return -1;
    }
    char *o = w->buf + w->len;
    const unsigned char *at = (const unsigned char *)s + sp.start;
    while (n > 0) {
        Py_ssize_t k = plain_prefix(at, n);
        o = put_bytes(o, at, k);
        at += k;
        n -= k;
        if (n > 0) { /* '"' or '\\', in printable ASCII */
            if (*at == '"' || *at == '\\') {
                *o++ = '\\';
            }
            *o++ = (char)*at++;
            n--;
        }
    }
    w->len = o - w->buf;
    return 0;
}

/* Printable ASCII s[sp] as a JSON string. */
static int w_text(Writer *w, const char *s, Span sp) {
    return W_LIT(w, "\"") < 0 || w_escaped(w, s, sp) < 0 ? -1 : W_LIT(w, "\"");
}

/* A str of printable ASCII (a name or a ts) as a JSON string. */
static int w_name(Writer *w, PyObject *str) {
    Span all = {0, PyUnicode_GET_LENGTH(str)};
    return w_text(w, (const char *)PyUnicode_1BYTE_DATA(str), all);
}

static int w_int(Writer *w, long long v) {
    char digits[24];
    int n = v < 0 ? 1 : 0;
    digits[0] = '-';
    n += put_digits(digits + n, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);
    return w_raw(w, digits, n);
}

/* "key":"text of s[sp]" */
static int w_field(Writer *w, const char *key, const char *s, Span sp) {
    return w_raw(w, key, (Py_ssize_t)strlen(key)) < 0 ? -1 : w_text(w, s, sp);
}

static int printable_str(PyObject *o) {
    if (!ascii_str(o)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(o);
    return printable_prefix(PyUnicode_1BYTE_DATA(o), n) == n;
}

/* event's members (sorted): action, category, created, outcome, type. */
static int w_event(Writer *w, int category, int type, int action, int outcome,
                   const char *created, Py_ssize_t created_len) {
    if (W_LIT(w, "\"event\":{\"action\":") < 0 || w_name(w, NAMES[action]) < 0 ||
        W_LIT(w, ",\"category\":[") < 0 || w_name(w, NAMES[category]) < 0 ||
        W_LIT(w, "],\"created\":") < 0 || w_raw(w, created, created_len) < 0 ||
        W_LIT(w, ",\"outcome\":") < 0 || w_name(w, NAMES[outcome]) < 0 ||
        W_LIT(w, ",\"type\":[") < 0 || w_name(w, NAMES[type]) < 0) {
        return -1;
    }
    return W_LIT(w, "]},");
}

typedef struct {
    const char *created, *log_head, *src;
    Py_ssize_t created_len, log_head_len, src_len;
} RunJson;

/* The JSON of apply_plan's record for line s[0:n] at file offset `at`, seq left out: writes
 * the part before seq, sets *split (where seq goes, from the record's start), then the rest. */
static int w_record(Writer *w, const char *s, Py_ssize_t n, const Plan *p, PyObject *ts,
                    PyObject *prog, long long at, const RunJson *rj, Py_ssize_t *split) {
    Fields f;
    fields_of(p, &f);
    Py_ssize_t start = w->len;
    Span line = {0, n};
    if (W_LIT(w, "{") < 0) {
        return -1;
    }
    if (f.sudo && p->nerrors > 0) { /* error.message: the errors joined by " ; " */
        if (W_LIT(w, "\"error\":{\"message\":\"") < 0) {
            return -1;
        }
        for (int k = 0; k < p->nerrors; k++) {
            if ((k > 0 && W_LIT(w, " ; ") < 0) || w_escaped(w, s, p->errors[k]) < 0) {
                return -1;
            }
        }
        if (W_LIT(w, "\"},") < 0) {
            return -1;
        }
    }
    if (f.event[0] >= 0) {
        if (w_event(w, f.event[0], f.event[1], f.event[2], f.event[3], rj->created,
                    rj->created_len) < 0) {
            return -1;
        }
    } else if (W_LIT(w, "\"event\":{\"created\":") < 0 ||
               w_raw(w, rj->created, rj->created_len) < 0 || W_LIT(w, "},") < 0) {
        return -1;
    }
    if (f.sudo && p->egroup.start >= 0 &&
        (w_field(w, "\"group\":{\"effective\":{\"name\":", s, p->egroup) < 0 ||
         W_LIT(w, "}},") < 0)) {
        return -1;
    }
    if (p->host.start >= 0 &&
        (w_field(w, "\"host\":{\"hostname\":", s, p->host) < 0 || W_LIT(w, "},") < 0)) {
        return -1;
    }
    if (w_raw(w, rj->log_head, rj->log_head_len) < 0 || w_int(w, at) < 0 ||
        W_LIT(w, "},\"msg\":") < 0 || w_text(w, s, line) < 0) {
        return -1;
    }
    /* process (sorted): command_line, name, pid, tty, working_directory */
    if (W_LIT(w, ",\"process\":{") < 0) {
        return -1;
    }
    if (f.sudo && p->command.start >= 0 &&
        (w_field(w, "\"command_line\":", s, p->command) < 0 || W_LIT(w, ",") < 0)) {
        return -1;
    }
    if (W_LIT(w, "\"name\":") < 0 || w_name(w, prog) < 0) {
        return -1;
    }
    if (p->pid.start >= 0 && (W_LIT(w, ",\"pid\":") < 0 || w_int(w, number(s, p->pid)) < 0)) {
        return -1;
    }
    if (f.tty.start >= 0 &&
        (w_field(w, ",\"tty\":{\"name\":", s, f.tty) < 0 || W_LIT(w, "}") < 0)) {
        return -1;
    }
    if (f.sudo && p->pwd.start >= 0 && w_field(w, ",\"working_directory\":", s, p->pwd) < 0) {
        return -1;
    }
    if (W_LIT(w, "},") < 0) {
        return -1;
    }
    *split = w->len - start;
    if (f.source && (w_field(w, "\"source\":{\"ip\":", s, f.ip) < 0 ||
                     (f.port.start >= 0 &&
                      (W_LIT(w, ",\"port\":") < 0 || w_int(w, number(s, f.port)) < 0)) ||
                     W_LIT(w, "},") < 0)) {
        return -1;
    }
    if (W_LIT(w, "\"src\":") < 0 || w_raw(w, rj->src, rj->src_len) < 0 || W_LIT(w, ",") < 0) {
        return -1;
    }
    /* system.auth: ssh (invalid_user, method, preauth, signature) or pam (module, service) */
    if (f.ssh == 1) {
        if (W_LIT(w, "\"system\":{\"auth\":{\"ssh\":{") < 0 ||
            (p->invalid && W_LIT(w, "\"invalid_user\":true,") < 0) ||
            w_field(w, "\"method\":", s, p->method) < 0 ||
            (p->preauth && W_LIT(w, ",\"preauth\":true") < 0) ||
            (p->sig.start >= 0 && p->sig.end > p->sig.start &&
             w_field(w, ",\"signature\":", s, p->sig) < 0) ||
            W_LIT(w, "}}},") < 0) {
            return -1;
        }
    } else if (f.ssh == 2) {
        if (W_LIT(w, "\"system\":{\"auth\":{\"ssh\":{\"preauth\":true}}},") < 0) {
            return -1;
        }
    } else if (f.pam) {
        if (w_field(w, "\"system\":{\"auth\":{\"pam\":{\"module\":", s, p->mod) < 0 ||
            w_field(w, ",\"service\":", s, p->svc) < 0 || W_LIT(w, "}}},") < 0) {
            return -1;
        }
    } else if (f.session.start >= 0) {
        if (w_field(w, "\"system\":{\"auth\":{\"session\":{\"id\":", s, f.session) < 0 ||
            W_LIT(w, "}}},") < 0) {
            return -1;
        }
    }
    if (W_LIT(w, "\"ts\":") < 0 || w_name(w, ts) < 0) {
        return -1;
    }
    /* user (sorted): effective, id, name */
    if (f.user.start >= 0 &&
        (W_LIT(w, ",\"user\":{") < 0 ||
         (f.effective.start >= 0 &&
          (w_field(w, "\"effective\":{\"name\":", s, f.effective) < 0 || W_LIT(w, "},") < 0)) ||
         (f.id.start >= 0 && (w_field(w, "\"id\":", s, f.id) < 0 || W_LIT(w, ",") < 0)) ||
         w_field(w, "\"name\":", s, f.user) < 0 || W_LIT(w, "}") < 0)) {
        return -1;
    }
    return W_LIT(w, "}");
}

static void put_le(char *p, unsigned long long v, int bytes) {
    for (int i = 0; i < bytes; i++) {
        p[i] = (char)(v >> (8 * i));
    }
}

static int bytes_arg(PyObject *o, const char *name, const char **text, Py_ssize_t *len) {
    if (!PyBytes_CheckExact(o)) {
        PyErr_Format(PyExc_TypeError, "encode_run: %s must be bytes", name);
        return -1;
    }
    *text = PyBytes_AS_STRING(o);
    *len = PyBytes_GET_SIZE(o);
    return 0;
}

#define ENCODED_HEAD 16 /* sources.ENCODED_HEAD's size */

PyDoc_STRVAR(encode_run_doc,
             "encode_run(data, begin, end, offset, programs, state, created, log_head, src, /)\n"
             "--\n\nThe canonical JSON (but for seq) of the records parse_batch would make of\n"
             "data[begin:end]'s lines, up to the first it would not: (blob, at, count).");

static PyObject *encode_run(PyObject *Py_UNUSED(module), PyObject *const *args,
                            Py_ssize_t nargs) {
    if (nargs != 9 || !PyBytes_CheckExact(args[0]) ||
        (args[4] != Py_None && !PyDict_CheckExact(args[4]))) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_run(data: bytes, begin, end, offset, programs: dict | None, "
                        "state, created: bytes, log_head: bytes, src: bytes)");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t begin = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    long long offset = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (begin < 0 || begin > end || end > size || (end > begin && data[end - 1] != '\n') ||
        offset < 0 || offset > LLONG_MAX - size) {
        PyErr_SetString(PyExc_ValueError, "encode_run: data[begin:end] must be whole lines");
        return NULL;
    }
    RunJson rj;
    if (bytes_arg(args[6], "created", &rj.created, &rj.created_len) < 0 ||
        bytes_arg(args[7], "log_head", &rj.log_head, &rj.log_head_len) < 0 ||
        bytes_arg(args[8], "src", &rj.src, &rj.src_len) < 0) {
        return NULL;
    }
    PyObject *programs = args[4], *state = args[5];
    State st = {0};
    if (load_state(state, &st) < 0) {
        return NULL;
    }
    PyObject *cur_stamp = NULL, *cur_ts = NULL, *last_prog = NULL, *result = NULL;
    if (ascii_str(st.stamp) && PyUnicode_CheckExact(st.ts)) {
        cur_stamp = Py_NewRef(st.stamp);
        cur_ts = Py_NewRef(st.ts);
    } else if ((cur_stamp = PyUnicode_New(0, 127)) != NULL) {
        cur_ts = Py_NewRef(Py_None);
    } else {
        goto done;
    }
    Writer w = {NULL, 0, 0};
    Py_ssize_t pos = begin, count = 0;
    int failed = 0;
    while (pos < end) {
        const char *line = data + pos;
        const char *newline = memchr(line, '\n', (size_t)(end - pos));
        Py_ssize_t n = newline - line;
        if (printable_prefix((const unsigned char *)line, n) != n) {
            break;
        }
        Text t = {PyUnicode_1BYTE_KIND, line, n};
        Plan p;
        PyObject *ts = NULL, *prog = NULL;
        int r = plan_line(&t, programs, &st, &cur_stamp, &cur_ts, &last_prog, &p, &ts, &prog);
        if (r < 0) {
            failed = 1;
            break;
        }
        if (r == 0) {
            break;
        }
        Py_ssize_t head_at = w.len, split = 0;
        int bad = !printable_str(ts) || !printable_str(prog);
        if (!bad) {
            if (w_room(&w, ENCODED_HEAD) < 0) {
                failed = 1;
            } else {
                w.len += ENCODED_HEAD;
                failed = w_record(&w, line, n, &p, ts, prog, offset + pos, &rj, &split) < 0;
            }
        }
        Py_DECREF(ts);
        Py_DECREF(prog);
        if (failed) {
            break;
        }
        if (bad) { /* not a time or name JSON writes as it is: the Python path's */
            w.len = head_at;
            break;
        }
        Py_ssize_t json_len = w.len - head_at - ENCODED_HEAD;
        if ((unsigned long long)split > UINT32_MAX ||
            (unsigned long long)(json_len - split) > UINT32_MAX) {
            w.len = head_at; /* a head holds 32-bit lengths: the Python path's (never in practice) */
            break;
        }
        put_le(w.buf + head_at, (unsigned long long)split, 4);
        put_le(w.buf + head_at + 4, (unsigned long long)(json_len - split), 4);
        put_le(w.buf + head_at + 8, (unsigned long long)(offset + pos + n + 1), 8);
        count++;
        pos += n + 1;
    }
    if (!failed) { /* the last stamp read here, to the parser's cache */
        PyObject *out = PyObject_CallFunctionObjArgs(state, cur_stamp, cur_ts, NULL);
        failed = out == NULL;
        Py_XDECREF(out);
    }
    if (!failed) {
        result = Py_BuildValue("(y#nn)", w.buf == NULL ? "" : w.buf, w.len, pos, count);
    }
    PyMem_Free(w.buf);
done:
    Py_XDECREF(cur_stamp);
    Py_XDECREF(cur_ts);
    Py_XDECREF(last_prog);
    Py_XDECREF(st.tuple);
    return result;
}

static int exec_module(PyObject *Py_UNUSED(module)) {
    for (int k = 0; k < N_NAMES; k++) {
        if (NAMES[k] == NULL && (NAMES[k] = PyUnicode_InternFromString(NAME_TEXT[k])) == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyMethodDef methods[] = {
    {"split_bsd", (PyCFunction)split_bsd, METH_O, split_bsd_doc},
    {"split_iso", (PyCFunction)split_iso, METH_O, split_iso_doc},
    {"parse_batch", (PyCFunction)(void (*)(void))parse_batch, METH_FASTCALL, parse_batch_doc},
    {"encode_run", (PyCFunction)(void (*)(void))encode_run, METH_FASTCALL, encode_run_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
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
