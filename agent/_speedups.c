/* The buffer writer's per-record loop in C: chain hash and frame of each record.
 *
 * agent/buffer/chain.py holds the same loop in Python: it is the reference (tests hold the two
 * equal, byte for byte) and the fallback where this module was not built. Read it first; this
 * file follows it line by line. The frame format is agent/buffer/segment.py's:
 *
 *   frame = u32 body_len | u32 crc32(body) | body                         (little endian)
 *   body  = u64 seq | 32-byte h | u16 cp_len | checkpoint | record
 *
 * The seq word's top bit (BARE) marks a record stored as its canonical JSON alone: its wire form
 * (canonical with ,"h":"<hex>" before its closing brace) is made by the readers from the h in
 * the frame's head. The writer writes only bare frames; the readers read both.
 * cp_len's top bit (CP_COMPACT) marks a checkpoint written as its offset's digits alone: its
 * source, key and path are those of the checkpoint framed before it by the same call.
 *
 * Records are encoded by orjson (the `dumps` passed in). What moves here is everything after it:
 * SHA-256 over prev || canonical (OpenSSL, as hashlib uses), the checkpoint bytes, crc32
 * (zlib's, as the zlib module computes it) and the frame, written into one buffer for the whole
 * run. The lines of a PlainRun (a raw source's chunk, agent/sources/__init__.py)
 * have no record: their canonical JSON is the run's head + offset + the line as a JSON string +
 * seq + the run's tail, which is orjson's bytes for the record run.records() makes (ASCII lines:
 * orjson escapes '"', '\\' and the control characters, with \b \t \n \f \r or \u00xx).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <zlib.h>

#include "_text.h"

#define DIGEST 32
#define HEAD 8                /* u32 body_len, u32 crc */
#define BODY_HEAD (8 + 32 + 2) /* u64 seq, h, u16 cp_len */
#define H_OPEN ",\"h\":\""
#define H_OPEN_LEN 6
#define BARE (1ULL << 63)                   /* the seq word's flag: the record is stored bare */
#define DRESSING (H_OPEN_LEN + 2 * DIGEST + 1) /* what a bare record's wire form adds */
#define MAX_SEQ (BARE - 1)                     /* the last seq the seq word holds */
static const char HEX_DIGITS[] = "0123456789abcdef";
#define CP_COMPACT 0x8000 /* cp_len's flag: the checkpoint is its offset's digits */
#define MAX_CP 0x7FFF     /* the longest checkpoint: cp_len without the flag */

static PyObject *str_record, *str_checkpoint, *str_seq, *str_h, *str_type, *str_gap, *str_seal;
static PyObject *str_begin, *str_end, *str_offset, *str_data, *str_head, *str_tail, *str_source,
    *str_key, *str_path, *str_blob;
static PyObject *option_kwnames;

/* The frames of one link() call, written into the caller's bytearray. It stays exported (a
 * Py_buffer held) while link() runs, so code it calls back cannot resize it under us; it is
 * released only to grow it, when no Python code runs. A bytearray exactly: a subclass may define
 * __buffer__ (3.12+), whose buffer need not be its bytes nor grow when they are resized. */
typedef struct {
    PyObject *array;
    Py_buffer view;
    int held;
    Py_ssize_t len;
} Out;

static int out_hold(Out *out) {
    if (PyObject_GetBuffer(out->array, &out->view, PyBUF_WRITABLE) < 0) {
        return -1;
    }
    out->held = 1;
    return 0;
}

static void out_release(Out *out) {
    if (out->held) {
        PyBuffer_Release(&out->view);
        out->held = 0;
    }
}

static int out_reserve(Out *out, Py_ssize_t more) {
    if (more > PY_SSIZE_T_MAX - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t want = out->len + more;
    if (want <= out->view.len) {
        return 0;
    }
    Py_ssize_t cap = out->view.len > (1 << 16) ? out->view.len : (1 << 16);
    while (cap < want) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? want : cap * 2;
    }
    out_release(out);
    if (PyByteArray_Resize(out->array, cap) < 0 || out_hold(out) < 0) {
        return -1;
    }
    if (out->view.len < want) { /* not a buffer of the bytearray's own bytes: never write past it */
        out_release(out);
        PyErr_SetString(PyExc_SystemError, "out did not grow");
        return -1;
    }
    return 0;
}

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* crc32 (zlib's: reflected 0xEDB88320, pre- and post-inverted) of a frame body, the checksum
 * segment.py's frames carry. Frames are a few hundred bytes, where zlib 1.2's table-driven crc32
 * runs ~1.3 GB/s: about a tenth of the writer's CPU per record and as much again in the reader.
 * On x86-64 CPUs with PCLMULQDQ the bulk is folded 64 bytes at a time with carry-less multiplies
 * (Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction",
 * Intel, 2009: the folding and Barrett constants for this polynomial are in its appendix); the
 * tail of fewer than 16 bytes and inputs under 64 bytes go through a table (crc_table), and other
 * CPUs use zlib for the bulk. tests/buffer/test_chain.py holds it equal to zlib.crc32 at every
 * length from 0 to 300 and at random lengths and alignments. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_CLMUL_CRC 1

/* x folded over 128 bits (constants k[0], k[1]) and xor-ed into `next`. */
__attribute__((target("sse4.1,pclmul"))) static inline __m128i fold(__m128i x, __m128i k,
                                                                    __m128i next) {
    __m128i low = _mm_clmulepi64_si128(x, k, 0x00);
    __m128i high = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(low, high), next);
}

/* crc over len bytes, len >= 64 and a multiple of 16; `crc` is the inverted running state. */
__attribute__((target("sse4.1,pclmul"))) static uint32_t crc32_fold(const unsigned char *buf,
                                                                   size_t len, uint32_t crc) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    const __m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i x[4];
    for (int i = 0; i < 4; i++) {
        x[i] = _mm_loadu_si128((const __m128i *)(buf + 16 * i));
    }
    x[0] = _mm_xor_si128(x[0], _mm_cvtsi32_si128((int)crc));
    buf += 64;
    len -= 64;
    for (; len >= 64; buf += 64, len -= 64) { /* four lanes, 512 bits apart */
        for (int i = 0; i < 4; i++) {
            x[i] = fold(x[i], k1k2, _mm_loadu_si128((const __m128i *)(buf + 16 * i)));
        }
    }
    __m128i acc = fold(fold(fold(x[0], k3k4, x[1]), k3k4, x[2]), k3k4, x[3]);
    for (; len >= 16; buf += 16, len -= 16) {
        acc = fold(acc, k3k4, _mm_loadu_si128((const __m128i *)buf));
    }
    /* 128 -> 64 bits */
    __m128i t = _mm_clmulepi64_si128(acc, k3k4, 0x10);
    acc = _mm_xor_si128(_mm_srli_si128(acc, 8), t);
    t = _mm_srli_si128(acc, 4);
    acc = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(acc, mask32), k5, 0x00), t);
    /* Barrett reduction to 32 bits */
    t = _mm_clmulepi64_si128(_mm_and_si128(acc, mask32), poly, 0x10);
    t = _mm_clmulepi64_si128(_mm_and_si128(t, mask32), poly, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(acc, t), 1);
}

static int clmul_usable = -1;

static int have_clmul(void) {
    if (clmul_usable < 0) {
        unsigned int eax, ebx, ecx, edx;
        clmul_usable = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_PCLMUL) &&
                       (ecx & bit_SSE4_1);
    }
    return clmul_usable;
}
#endif

/* zlib's crc table, for the tail of fewer than 16 bytes after the fold and for short frames: a
 * call into zlib per tail cost nearly as much as folding the rest of the frame (perf). */
static uint32_t crc_table[256];

static void init_crc_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
}

static uint32_t frame_crc(const unsigned char *buf, size_t len) {
    uint32_t state = 0xFFFFFFFFu; /* the inverted running crc */
#ifdef HAVE_CLMUL_CRC
    if (len >= 64 && have_clmul()) {
        size_t bulk = len & ~(size_t)15;
        state = crc32_fold(buf, bulk, state);
        buf += bulk;
        len -= bulk;
    }
#endif
    if (len >= 64) { /* no folding here: zlib, which takes a uInt length, in pieces */
        uLong crc = 0L;
        for (; len > 0x40000000u; buf += 0x40000000u, len -= 0x40000000u) {
            crc = crc32(crc, buf, 0x40000000u);
        }
        return (uint32_t)crc32(crc, buf, (uInt)len);
    }
    for (; len > 0; buf++, len--) {
        state = crc_table[(state ^ *buf) & 0xFF] ^ (state >> 8);
    }
    return state ^ 0xFFFFFFFFu;
}

PyDoc_STRVAR(crc32_doc, "crc32(data)\n--\n\nzlib.crc32(data), as the frames use it (tests).");

static PyObject *py_crc32(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t crc = frame_crc(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* canonical JSON of `record`, or of its stand-in from on_error(record, exc) when orjson refuses
 * it (JSONEncodeError is a TypeError). New reference, NULL with an exception set. */
static PyObject *encode(PyObject *record, PyObject *dumps, PyObject *option, PyObject *on_error) {
    PyObject *args[2] = {record, option};
    PyObject *canonical = PyObject_Vectorcall(dumps, args, 1, option_kwnames);
    if (canonical == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb); /* PyErr_GetRaisedException is 3.12+ */
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(exc, tb);
        }
        canonical = PyObject_CallFunctionObjArgs(on_error, record, exc, NULL);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
    }
    if (canonical == NULL) {
        return NULL;
    }
    /* The frame is bare: readers put h in before the closing brace (bare_ok, dress). */
    if (!PyBytes_Check(canonical) || PyBytes_GET_SIZE(canonical) < 3 ||
        PyBytes_AS_STRING(canonical)[0] != '{' ||
        PyBytes_AS_STRING(canonical)[PyBytes_GET_SIZE(canonical) - 1] != '}') {
        Py_DECREF(canonical);
        PyErr_SetString(PyExc_ValueError, "canonical encoding is not a JSON object other than {}");
        return NULL;
    }
    return canonical;
}

/* A checkpoint's bytes are cp_prefix(source, key, path) + str(offset) + "}", written straight
 * into the frame. The records of a chunk share their source, key and path objects, so the prefix
 * of the last checkpoint is kept (with strong references to the three objects it was made from:
 * the same objects, by identity, give the same prefix, cp_prefix being a pure function), and the
 * offset of an int that fits is formatted without a temporary str. */
typedef struct {
    PyObject *source, *key, *path, *prefix;
} PrefixCache;

static void prefix_cache_clear(PrefixCache *cache) {
    Py_CLEAR(cache->source);
    Py_CLEAR(cache->key);
    Py_CLEAR(cache->path);
    Py_CLEAR(cache->prefix);
}

/* cp_prefix(source, key, path): a reference the cache holds, or NULL. */
static PyObject *prefix_for(PrefixCache *cache, PyObject *source, PyObject *key, PyObject *path,
                            PyObject *cp_prefix) {
    if (cache->prefix != NULL && source == cache->source && key == cache->key &&
        path == cache->path) {
        return cache->prefix;
    }
    PyObject *args[3] = {source, key, path};
    /* Held: the call below runs Python code, which may drop its owner's hold on them. */
    Py_INCREF(source);
    Py_INCREF(key);
    Py_INCREF(path);
    PyObject *prefix = PyObject_Vectorcall(cp_prefix, args, 3, NULL);
    if (prefix != NULL && !PyBytes_Check(prefix)) {
        Py_CLEAR(prefix);
        PyErr_SetString(PyExc_TypeError, "checkpoint prefix must be bytes");
    }
    prefix_cache_clear(cache);
    if (prefix == NULL) {
        Py_DECREF(source);
        Py_DECREF(key);
        Py_DECREF(path);
        return NULL;
    }
    cache->source = source;
    cache->key = key;
    cache->path = path;
    cache->prefix = prefix;
    return prefix;
}

/* cp_prefix(source, key, path) for the Checkpoint `cp`: a reference the cache holds, or NULL. */
static PyObject *checkpoint_prefix(PrefixCache *cache, PyObject *cp, PyObject *cp_prefix) {
    if (!PyTuple_Check(cp) || PyTuple_GET_SIZE(cp) != 4) {
        PyErr_SetString(PyExc_TypeError, "checkpoint must be a Checkpoint");
        return NULL;
    }
    return prefix_for(cache, PyTuple_GET_ITEM(cp, 0), PyTuple_GET_ITEM(cp, 1),
                      PyTuple_GET_ITEM(cp, 3), cp_prefix);
}

/* str(offset) as UTF-8: in `small` for an int that fits a long long, else from a str kept in
 * *owner (new reference, released by the caller). -1 with an exception set on errors. */
static int offset_digits(PyObject *offset, char *small, size_t small_len, const char **digits,
                         Py_ssize_t *len, PyObject **owner) {
    *owner = NULL;
    if (PyLong_CheckExact(offset)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(offset, &overflow);
        if (value == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow && small_len >= 21) {
            unsigned long long magnitude = (unsigned long long)value;
            Py_ssize_t n = 0;
            if (value < 0) {
                small[n++] = '-';
                magnitude = 0ULL - magnitude;
            }
            *len = n + put_digits(small + n, magnitude);
            *digits = small;
            return 0;
        }
    }
    *owner = PyObject_Str(offset);
    if (*owner == NULL) {
        return -1;
    }
    *digits = PyUnicode_AsUTF8AndSize(*owner, len);
    if (*digits == NULL) {
        Py_CLEAR(*owner);
        return -1;
    }
    return 0;
}

/* The state of one link() call: the frames made so far (in out), the chain head and seq, and
 * what goes back to the caller. */
typedef struct {
    Out out;
    PrefixCache cache;
    PyObject *cps;
    Py_ssize_t count; /* records framed */
    unsigned char prev[DIGEST];
    unsigned long long seq;
    long long room, used, limit;
    PyObject *cp_prefix;
    PyObject *written; /* the prefix of the last checkpoint framed (a reference), or NULL */
    int segment_full;
} Linker;

/* Frame one record, canonical[0:n] (a JSON object, never {}), as seq + 1 after prev, its
 * checkpoint being prefix + digits + "}" (none when prefix is NULL): the record goes into the
 * frame bare, as canonical, and no Python object is made.
 * 1: framed; 0: it does not fit the segment (segment_full is set, nothing made); -1: an error. */
static int frame_record(Linker *L, const char *canonical, Py_ssize_t n, PyObject *prefix,
                        const char *digits, Py_ssize_t digits_len) {
    unsigned char digest[DIGEST];
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, L->prev, DIGEST);
    SHA256_Update(&sha, canonical, (size_t)n);
    SHA256_Final(digest, &sha);
    Py_ssize_t cp_len = 0;
    /* The same source, key and path as the checkpoint framed before: its digits are enough. */
    int compact = prefix != NULL && L->written != NULL &&
                  (prefix == L->written ||
                   (PyBytes_GET_SIZE(prefix) == PyBytes_GET_SIZE(L->written) &&
                    memcmp(PyBytes_AS_STRING(prefix), PyBytes_AS_STRING(L->written),
                           (size_t)PyBytes_GET_SIZE(prefix)) == 0));
    if (prefix != NULL) {
        cp_len = compact ? digits_len : PyBytes_GET_SIZE(prefix) + digits_len + 1;
        if (cp_len > MAX_CP) {
            PyErr_SetString(PyExc_ValueError, "checkpoint longer than 32767 bytes");
            return -1;
        }
    }
    Py_ssize_t body_len = BODY_HEAD + cp_len + n;
    Py_ssize_t frame_len = HEAD + body_len;
    if ((uint64_t)body_len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "frame body longer than 4 GiB");
        return -1;
    }
    /* used + made > 0 and used + made + frame_len > limit, without overflowing */
    int past_limit;
    if (L->used > LLONG_MAX - L->out.len) {
        past_limit = 1;
    } else {
        long long in_segment = L->used + L->out.len;
        past_limit = in_segment > 0 && (L->limit < in_segment || frame_len > L->limit - in_segment);
    }
    if (past_limit) {
        L->segment_full = 1; /* this record starts the next segment: the caller calls again */
        return 0;
    }
    if (out_reserve(&L->out, frame_len) < 0) {
        return -1;
    }
    unsigned char *frame = (unsigned char *)L->out.view.buf + L->out.len;
    unsigned char *body = frame + HEAD;
    put_u64(body, ((uint64_t)L->seq + 1) | BARE);
    memcpy(body + 8, digest, DIGEST);
    put_u16(body + 40, (uint16_t)(compact ? cp_len | CP_COMPACT : cp_len));
    if (compact) {
        memcpy(body + BODY_HEAD, digits, (size_t)digits_len);
    } else if (cp_len) {
        unsigned char *at = body + BODY_HEAD;
        Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
        memcpy(at, PyBytes_AS_STRING(prefix), (size_t)prefix_len);
        memcpy(at + prefix_len, digits, (size_t)digits_len);
        at[prefix_len + digits_len] = '}';
    }
    memcpy(body + BODY_HEAD + cp_len, canonical, (size_t)n);
    put_u32(frame, (uint32_t)body_len);
    put_u32(frame + 4, frame_crc(body, (size_t)body_len));
    L->out.len += frame_len;
    memcpy(L->prev, digest, DIGEST);
    L->seq += 1;
    L->count += 1;
    if (prefix != NULL && prefix != L->written) {
        Py_XSETREF(L->written, Py_NewRef(prefix));
    }
    return 1;
}

/* One Pending: its record gets seq, is encoded by dumps (or on_error) and framed with its
 * checkpoint. As frame_record; the checkpoint goes to cps when framed. */
static int link_pending(Linker *L, PyObject *item, PyObject *dumps, PyObject *option,
                        PyObject *on_error) {
    PyObject *record = PyObject_GetAttr(item, str_record);
    if (record == NULL) {
        return -1;
    }
    PyObject *seq_obj = PyLong_FromUnsignedLongLong(L->seq + 1);
    if (seq_obj == NULL || PyObject_SetItem(record, str_seq, seq_obj) < 0) {
        Py_XDECREF(seq_obj);
        Py_DECREF(record);
        return -1;
    }
    PyObject *canonical = encode(record, dumps, option, on_error);
    Py_DECREF(record);
    PyObject *cp = canonical == NULL ? NULL : PyObject_GetAttr(item, str_checkpoint);
    PyObject *prefix = NULL, *digits_owner = NULL;
    char small[24];
    const char *digits = NULL;
    Py_ssize_t digits_len = 0;
    int made = -1;
    if (cp == NULL) {
        goto done;
    }
    if (cp != Py_None) {
        prefix = checkpoint_prefix(&L->cache, cp, L->cp_prefix);
        if (prefix == NULL || offset_digits(PyTuple_GET_ITEM(cp, 2), small, sizeof small, &digits,
                                            &digits_len, &digits_owner) < 0) {
            goto done;
        }
    }
    made = frame_record(L, PyBytes_AS_STRING(canonical), PyBytes_GET_SIZE(canonical), prefix,
                        digits, digits_len);
    if (made == 1 && cp != Py_None && PyList_Append(L->cps, cp) < 0) {
        made = -1;
    }
done:
    Py_DECREF(seq_obj);
    Py_XDECREF(canonical);
    Py_XDECREF(cp);
    Py_XDECREF(digits_owner);
    return made;
}

/* Whether the next record (a Pending, or a run's next) may be framed: 1 yes, 0 no room is left
 * (stop), -1 its seq would pass what the seq word holds, 2**63 - 1 (an error). */
static int next_fits(Linker *L) {
    if (L->room - L->out.len <= 0) {
        return 0;
    }
    if (L->seq >= MAX_SEQ) {
        PyErr_SetString(PyExc_OverflowError, "seq past 2**63 - 1");
        return -1;
    }
    return 1;
}

/* A run's checkpoint `cp` (a new reference, or NULL: its maker failed) added to the call's;
 * returns `status`, or -1 on an error. */
static int add_checkpoint(Linker *L, PyObject *cp, int status) {
    if (cp == NULL || PyList_Append(L->cps, cp) < 0) {
        status = -1;
    }
    Py_XDECREF(cp);
    return status;
}

/* The ints a run holds at `names` (begin, end and, for a PlainRun, offset) into out: 0, or -1
 * with an exception set. */
static int run_ints(PyObject *run, PyObject *const *names, int n, long long *out) {
    for (int k = 0; k < n; k++) {
        PyObject *value = PyObject_GetAttr(run, names[k]);
        if (value == NULL) {
            return -1;
        }
        if (!PyLong_CheckExact(value)) {
            Py_DECREF(value);
            PyErr_Format(PyExc_TypeError, "a run's %U must be an int", names[k]);
            return -1;
        }
        out[k] = PyLong_AsLongLong(value);
        Py_DECREF(value);
        if (out[k] == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    return 0;
}

/* The checkpoint prefix of a run's records, from its source, key and path: a new reference
 * (the cache's may go when a later prefix replaces it), or NULL. */
static PyObject *run_prefix(Linker *L, PyObject *run) {
    PyObject *source = PyObject_GetAttr(run, str_source);
    PyObject *key = source == NULL ? NULL : PyObject_GetAttr(run, str_key);
    PyObject *path = key == NULL ? NULL : PyObject_GetAttr(run, str_path);
    PyObject *prefix = path == NULL ? NULL : prefix_for(&L->cache, source, key, path, L->cp_prefix);
    Py_XINCREF(prefix);
    Py_XDECREF(source);
    Py_XDECREF(key);
    Py_XDECREF(path);
    return prefix;
}

/* *buf grown (PyMem) to hold n bytes: 0, or -1 with MemoryError. */
static int scratch_reserve(char **buf, Py_ssize_t *capacity, Py_ssize_t n) {
    if (n <= *capacity) {
        return 0;
    }
    char *grown = PyMem_Realloc(*buf, (size_t)n);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = grown;
    *capacity = n;
    return 0;
}

/* How orjson writes each ASCII byte inside a JSON string: 0 as it is, else the escape's second
 * character ('u' for \u00XX); 'x' for a byte that is not ASCII, which a run's lines must be. */
static char escapes[256];

static void init_escapes(void) {
    for (int c = 0x80; c < 0x100; c++) {
        escapes[c] = 'x';
    }
    for (int c = 0; c < 0x20; c++) {
        escapes[c] = 'u';
    }
    escapes['\b'] = 'b';
    escapes['\t'] = 't';
    escapes['\n'] = 'n';
    escapes['\f'] = 'f';
    escapes['\r'] = 'r';
    escapes['"'] = '"';
    escapes['\\'] = '\\';
}

/* The bytes value of a run's attribute `name` (a new reference), or NULL with an exception set. */
static PyObject *run_bytes(PyObject *run, PyObject *name) {
    PyObject *value = PyObject_GetAttr(run, name);
    if (value != NULL && !PyBytes_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "a run's %U must be bytes", name);
        Py_CLEAR(value);
    }
    return value;
}

/* The frames of run's lines from text[run.begin] on, while they fit (as link_pending, one per
 * line); the last line's checkpoint goes to cps. 1: go on with the next item; 0: stop (room,
 * segment end or `one`); -1: an error. *complete: every line was framed; else *at is where in
 * the text it stopped (0 when before its first line). */
static int link_run(Linker *L, PyObject *run, int one, Py_ssize_t *at, int *complete) {
    PyObject *text = NULL, *head_obj = NULL, *tail_obj = NULL;
    char *canonical = NULL;
    Py_ssize_t capacity = 0;
    int status = -1;
    PyObject *const names[3] = {str_begin, str_end, str_offset};
    long long ints[3];
    if (run_ints(run, names, 3, ints) < 0) {
        goto done;
    }
    /* Held while the lines are framed: cp_prefix runs Python code, which could rebind them. */
    text = run_bytes(run, str_data);
    if (text == NULL) {
        goto done;
    }
    const char *data = PyBytes_AS_STRING(text);
    Py_ssize_t text_len = PyBytes_GET_SIZE(text);
    long long offset = ints[2];
    if (ints[0] < 0 || ints[0] >= ints[1] || ints[1] > text_len || data[ints[1] - 1] != '\n' ||
        offset < 0 || offset > LLONG_MAX - text_len) {
        PyErr_SetString(PyExc_ValueError, "a run holds whole lines of its data");
        goto done;
    }
    Py_ssize_t begin = (Py_ssize_t)ints[0], end = (Py_ssize_t)ints[1];
    head_obj = run_bytes(run, str_head);
    tail_obj = head_obj == NULL ? NULL : run_bytes(run, str_tail);
    if (tail_obj == NULL) {
        goto done;
    }
    const char *head = PyBytes_AS_STRING(head_obj), *tail = PyBytes_AS_STRING(tail_obj);
    Py_ssize_t head_len = PyBytes_GET_SIZE(head_obj), tail_len = PyBytes_GET_SIZE(tail_obj);
    PyObject *prefix = run_prefix(L, run);
    if (prefix == NULL) {
        goto done;
    }
    Py_ssize_t pos = begin;
    status = 1;
    while (pos < end) {
        if ((status = next_fits(L)) <= 0) {
            break;
        }
        const char *line = data + pos;
        const char *newline = memchr(line, '\n', (size_t)(end - pos));
        Py_ssize_t line_len = newline - line;
        Py_ssize_t escaped = plain_prefix((const unsigned char *)line, line_len);
        for (Py_ssize_t k = escaped; k < line_len; k++) {
            char e = escapes[(unsigned char)line[k]];
            escaped += e == 0 ? 1 : e == 'u' ? 6 : 2;
            if (e == 'x') {
                PyErr_SetString(PyExc_ValueError, "a run's lines must be ASCII");
                status = -1;
                goto lines_done;
            }
        }
        char at_digits[24], seq_digits[24], end_digits[24];
        /* offset + pos >= 0: offset was checked non-negative and short of overflowing */
        int at_len = put_digits(at_digits, (unsigned long long)(offset + pos));
        int seq_len = put_digits(seq_digits, L->seq + 1);
        int end_len = put_digits(end_digits, (unsigned long long)(offset + pos + line_len + 1));
        static const char msg_open[] = "},\"msg\":\"", seq_open[] = "\",\"seq\":";
        Py_ssize_t n = head_len + at_len + (Py_ssize_t)(sizeof msg_open - 1) + escaped +
                       (Py_ssize_t)(sizeof seq_open - 1) + seq_len + tail_len;
        if (scratch_reserve(&canonical, &capacity, n) < 0) {
            status = -1;
            break;
        }
        char *p = put_bytes(canonical, head, head_len);
        p = put_bytes(p, at_digits, at_len);
        p = put_bytes(p, msg_open, sizeof msg_open - 1);
        if (escaped == line_len) {
            p = put_bytes(p, line, line_len);
        } else {
            for (Py_ssize_t k = 0; k < line_len; k++) {
                unsigned char c = (unsigned char)line[k];
                char e = escapes[c];
                if (e == 0) {
                    *p++ = (char)c;
                } else if (e == 'u') {
                    memcpy(p, "\\u00", 4);
                    p[4] = HEX_DIGITS[c >> 4];
                    p[5] = HEX_DIGITS[c & 15];
                    p += 6;
                } else {
                    p[0] = '\\';
                    p[1] = e;
                    p += 2;
                }
            }
        }
        p = put_bytes(p, seq_open, sizeof seq_open - 1);
        p = put_bytes(p, seq_digits, seq_len);
        put_bytes(p, tail, tail_len);
        int made = frame_record(L, canonical, n, prefix, end_digits, end_len);
        if (made <= 0) {
            status = made;
            break;
        }
        pos += line_len + 1;
        if (one) {
            status = 0;
            break;
        }
    }
lines_done:
    Py_DECREF(prefix);
    *complete = pos == end;
    *at = pos == begin || pos == end ? 0 : pos;
    if (status >= 0 && pos > begin) { /* the last line's checkpoint stands for the run's */
        status = add_checkpoint(L, PyObject_CallMethod(run, "checkpoint_at", "n", pos), status);
    }
done:
    PyMem_Free(canonical);
    Py_XDECREF(text);
    Py_XDECREF(head_obj);
    Py_XDECREF(tail_obj);
    return status;
}

#define ENCODED_HEAD 16

/* The frames of an EncodedRun's records (agent/sources/__init__.py) from blob[run.begin] on,
 * while they fit: each is its JSON before the place of seq + "seq":N, + the JSON after it, with
 * the checkpoint its head gives. As link_run: 1 go on, 0 stop, -1 error; *complete, *at. */
static int link_encoded(Linker *L, PyObject *run, int one, Py_ssize_t *at, int *complete) {
    PyObject *blob = NULL;
    char *canonical = NULL;
    Py_ssize_t capacity = 0;
    int status = -1;
    PyObject *const names[2] = {str_begin, str_end};
    long long ints[2];
    if (run_ints(run, names, 2, ints) < 0) {
        goto done;
    }
    blob = run_bytes(run, str_blob); /* held: cp_prefix runs Python code */
    if (blob == NULL) {
        goto done;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(blob);
    if (ints[0] < 0 || ints[0] >= ints[1] || ints[1] > PyBytes_GET_SIZE(blob)) {
        PyErr_SetString(PyExc_ValueError, "an encoded run holds at least one record of its blob");
        goto done;
    }
    Py_ssize_t begin = (Py_ssize_t)ints[0], end = (Py_ssize_t)ints[1];
    PyObject *prefix = run_prefix(L, run);
    if (prefix == NULL) {
        goto done;
    }
    Py_ssize_t pos = begin;
    unsigned long long last_cp = 0;
    int framed = 0;
    status = 1;
    while (pos < end) {
        if ((status = next_fits(L)) <= 0) {
            break;
        }
        if (end - pos < ENCODED_HEAD) {
            PyErr_SetString(PyExc_ValueError, "an encoded run's blob ends inside a record's head");
            status = -1;
            break;
        }
        /* Each length is below 2**32: their sum is compared unsigned, then fits a Py_ssize_t. */
        unsigned long long before_u = get_u32(data + pos), after_u = get_u32(data + pos + 4);
        unsigned long long cp = get_u64(data + pos + 8);
        const unsigned char *json = data + pos + ENCODED_HEAD;
        if ((unsigned long long)(end - pos - ENCODED_HEAD) < before_u + after_u) {
            PyErr_SetString(PyExc_ValueError, "an encoded run's blob ends inside a record");
            status = -1;
            break;
        }
        Py_ssize_t before = (Py_ssize_t)before_u, after = (Py_ssize_t)after_u;
        char seq_digits[24], cp_digits[24];
        int seq_len = put_digits(seq_digits, L->seq + 1);
        int cp_len = put_digits(cp_digits, cp);
        static const char seq_open[] = "\"seq\":";
        Py_ssize_t n = before + (Py_ssize_t)(sizeof seq_open - 1) + seq_len + 1 + after;
        if (scratch_reserve(&canonical, &capacity, n) < 0) {
            status = -1;
            break;
        }
        char *p = put_bytes(canonical, json, before);
        p = put_bytes(p, seq_open, sizeof seq_open - 1);
        p = put_bytes(p, seq_digits, seq_len);
        *p++ = ',';
        put_bytes(p, json + before, after);
        if (n < 2 || canonical[0] != '{' || canonical[n - 1] != '}') {
            PyErr_SetString(PyExc_ValueError, "an encoded run's record is not a JSON object");
            status = -1;
            break;
        }
        int made = frame_record(L, canonical, n, prefix, cp_digits, cp_len);
        if (made <= 0) {
            status = made;
            break;
        }
        pos += ENCODED_HEAD + before + after;
        last_cp = cp;
        framed = 1;
        if (one) {
            status = 0;
            break;
        }
    }
    Py_DECREF(prefix);
    *complete = pos == end;
    *at = pos == begin || pos == end ? 0 : pos;
    if (status >= 0 && framed) { /* the last record's checkpoint stands for the run's */
        status = add_checkpoint(L, PyObject_CallMethod(run, "checkpoint", "K", last_cp), status);
    }
done:
    PyMem_Free(canonical);
    Py_XDECREF(blob);
    return status;
}

PyDoc_STRVAR(link_doc,
             "link(items, start, seq, prev, room, used, limit, one, dumps, option, cp_prefix, "
             "on_error, out, run_type, encoded_type)\n--\n\nSee agent.buffer.chain.link_py: "
             "the same loop, the same results.");

static PyObject *chain_link(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "link takes 15 arguments");
        return NULL;
    }
    PyObject *items = args[0];
    PyObject *prev_obj = args[3];
    PyObject *dumps = args[8], *option = args[9], *on_error = args[11], *run_type = args[13],
             *encoded_type = args[14];
    Linker L = {.out = {.array = args[12], .held = 0, .len = 0},
                .cache = {NULL, NULL, NULL, NULL},
                .cp_prefix = args[10],
                .written = NULL};
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* seq as the frames hold it: a u64 (a negative one is refused, as struct refuses it) */
    L.seq = PyLong_AsUnsignedLongLong(args[2]);
    if (L.seq == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    L.room = PyLong_AsLongLong(args[4]);
    if (L.room == -1 && PyErr_Occurred()) {
        return NULL;
    }
    L.used = PyLong_AsLongLong(args[5]);
    if (L.used == -1 && PyErr_Occurred()) {
        return NULL;
    }
    L.limit = PyLong_AsLongLong(args[6]);
    if (L.limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int one = PyObject_IsTrue(args[7]);
    if (one < 0) {
        return NULL;
    }
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start must not be negative");
        return NULL;
    }
    if (!PyList_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "items must be a list");
        return NULL;
    }
    if (!PyBytes_Check(prev_obj) || PyBytes_GET_SIZE(prev_obj) != DIGEST) {
        PyErr_SetString(PyExc_ValueError, "prev must be 32 bytes");
        return NULL;
    }
    if (!PyByteArray_CheckExact(L.out.array)) {
        PyErr_SetString(PyExc_TypeError, "out must be a bytearray (not a subclass)");
        return NULL;
    }
    if (!PyType_Check(run_type) || !PyType_Check(encoded_type)) {
        PyErr_SetString(PyExc_TypeError, "run_type and encoded_type must be types");
        return NULL;
    }
    memcpy(L.prev, PyBytes_AS_STRING(prev_obj), DIGEST);
    if (out_hold(&L.out) < 0) {
        return NULL;
    }
    L.cps = PyList_New(0);
    PyObject *result = NULL;
    Py_ssize_t i = start, at = 0;
    if (L.cps == NULL) {
        goto done;
    }
    while (i < PyList_GET_SIZE(items)) {
        /* Held: the calls below run Python code (on_error, a record's __setitem__), which may
         * take the item out of `items`. */
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        int made, complete = 0;
        if (Py_IS_TYPE(item, (PyTypeObject *)run_type)) {
            made = link_run(&L, item, one, &at, &complete);
        } else if (Py_IS_TYPE(item, (PyTypeObject *)encoded_type)) {
            made = link_encoded(&L, item, one, &at, &complete);
        } else if ((made = next_fits(&L)) == 1) {
            made = link_pending(&L, item, dumps, option, on_error);
            complete = made == 1;
            if (made == 1 && one) {
                made = 0; /* fsync = "always": one record per call */
            }
        }
        Py_DECREF(item);
        if (made < 0) {
            goto done;
        }
        if (complete) {
            i++;
        }
        if (made == 0) {
            break;
        }
    }
    result = Py_BuildValue("(nnnny#OO)", i, at, L.out.len, L.count, (const char *)L.prev,
                           (Py_ssize_t)DIGEST, L.cps, L.segment_full ? Py_True : Py_False);
done:
    out_release(&L.out);
    prefix_cache_clear(&L.cache);
    Py_XDECREF(L.written);
    Py_XDECREF(L.cps);
    return result;
}

/* CorruptFrameError(offset, reason, intact) set; intact: the frame's checksum held. */
static int corrupt(PyObject *error, Py_ssize_t offset, const char *reason, int intact) {
    PyObject *exc =
        PyObject_CallFunction(error, "nsO", offset, reason, intact ? Py_True : Py_False);
    if (exc != NULL) {
        PyErr_SetObject(error, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* Whether a bare record stored[0:n] can be dressed: at least 3 bytes, the last a closing brace
 * (what the writer frames is a JSON object other than {}; this is all dress needs). */
static int bare_ok(const unsigned char *stored, Py_ssize_t n) {
    return n >= 3 && stored[n - 1] == '}';
}

/* A bare record's wire form into out (n + DRESSING bytes): stored without its closing brace,
 * then ,"h":"<hex of h>"}. */
static void dress(char *out, const unsigned char *stored, Py_ssize_t n, const unsigned char *h) {
    memcpy(out, stored, (size_t)(n - 1));
    out += n - 1;
    memcpy(out, H_OPEN, H_OPEN_LEN);
    out += H_OPEN_LEN;
    for (int i = 0; i < DIGEST; i++) {
        *out++ = HEX_DIGITS[h[i] >> 4];
        *out++ = HEX_DIGITS[h[i] & 15];
    }
    out[0] = '"';
    out[1] = '}';
}

/* One frame at pos of data[:size]: 1 (its seq, h, record span and end set, and whether the
 * record is bare), 0 if incomplete, -1 with CorruptFrameError set (as parse_run checks it). */
static int next_frame(const unsigned char *data, Py_ssize_t size, Py_ssize_t pos,
                      long long max_frame, PyObject *error, int verify, uint64_t *seq,
                      const unsigned char **h, Py_ssize_t *record, Py_ssize_t *end, int *bare) {
    if (pos + HEAD > size) {
        return 0;
    }
    uint32_t length = get_u32(data + pos), crc = get_u32(data + pos + 4);
    if (length < BODY_HEAD || (long long)length > max_frame) {
        char reason[64];
        snprintf(reason, sizeof reason, "impossible length %u", length);
        corrupt(error, pos, reason, 0);
        return -1;
    }
    Py_ssize_t start = pos + HEAD;
    *end = start + (Py_ssize_t)length;
    if (*end > size) {
        return 0;
    }
    if (verify && frame_crc(data + start, length) != crc) {
        corrupt(error, pos, "checksum mismatch", 0);
        return -1;
    }
    const unsigned char *body = data + start;
    uint64_t word = get_u64(body);
    Py_ssize_t cp_len = ((Py_ssize_t)body[40] | (Py_ssize_t)body[41] << 8) & MAX_CP;
    if (BODY_HEAD + cp_len > (Py_ssize_t)length) {
        corrupt(error, pos, "checkpoint overruns frame", 1);
        return -1;
    }
    *bare = (word & BARE) != 0;
    if (*bare && !bare_ok(body + BODY_HEAD + cp_len, (Py_ssize_t)length - BODY_HEAD - cp_len)) {
        corrupt(error, pos, "bare record is not a JSON object", 1);
        return -1;
    }
    *seq = word & ~BARE;
    *h = body + 8;
    *record = start + BODY_HEAD + cp_len;
    return 1;
}

PyDoc_STRVAR(parse_run_doc,
             "parse_run(data, limit_records, max_frame, error)\n--\n\n"
             "See agent.buffer.segment.parse_run_py: the same loop, the same results, as a tuple "
             "(seqs, hashes, records, ends).");

static PyObject *parse_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_run takes 4 arguments");
        return NULL;
    }
    PyObject *data_obj = args[0], *error = args[3];
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long max_frame = PyLong_AsLongLong(args[2]);
    if (max_frame == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* Any contiguous buffer (the reader's window is a view of a bytearray it keeps). Held
     * exported until we return: code run by an allocation (a finalizer) cannot resize it. */
    Py_buffer view;
    if (PyObject_GetBuffer(data_obj, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len, pos = 0, count = 0;
    PyObject *seqs = PyList_New(0), *hashes = PyList_New(0), *records = PyList_New(0);
    PyObject *ends = PyList_New(0);
    if (!seqs || !hashes || !records || !ends) {
        goto fail;
    }
    while (count < limit) {
        uint64_t seq;
        const unsigned char *h;
        Py_ssize_t record, end;
        int bare, got = next_frame(data, size, pos, max_frame, error, 1, &seq, &h, &record, &end,
                                   &bare);
        if (got < 0) {
            goto fail;
        }
        if (got == 0) {
            break;
        }
        const unsigned char *stored = data + record;
        Py_ssize_t n = end - record;
        PyObject *seq_obj = PyLong_FromUnsignedLongLong(seq);
        PyObject *h_obj = PyBytes_FromStringAndSize((const char *)h, DIGEST);
        PyObject *record_obj = PyBytes_FromStringAndSize(bare ? NULL : (const char *)stored,
                                                         bare ? n + DRESSING : n);
        if (bare && record_obj != NULL) {
            dress(PyBytes_AS_STRING(record_obj), stored, n, h);
        }
        PyObject *end_obj = PyLong_FromSsize_t(end);
        int bad = !seq_obj || !h_obj || !record_obj || !end_obj ||
                  PyList_Append(seqs, seq_obj) < 0 || PyList_Append(hashes, h_obj) < 0 ||
                  PyList_Append(records, record_obj) < 0 || PyList_Append(ends, end_obj) < 0;
        Py_XDECREF(seq_obj);
        Py_XDECREF(h_obj);
        Py_XDECREF(record_obj);
        Py_XDECREF(end_obj);
        if (bad) {
            goto fail;
        }
        pos = end;
        count++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNNN)", seqs, hashes, records, ends);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(seqs);
    Py_XDECREF(hashes);
    Py_XDECREF(records);
    Py_XDECREF(ends);
    return NULL;
}

PyDoc_STRVAR(gather_run_doc,
             "gather_run(data, position, want, max_bytes, strict, body, hashes, max_frame, error, "
             "reserve)"
             "\n--\n\n"
             "See agent.buffer.segment.gather_run_py: the same loop, the same results.");


/* gather_run's loop over data[:size]: pass 1 (out NULL) finds the frames to take and sums
 * their bytes in *need (records in their wire form, and newlines) and *count; pass 2 copies them
 * to out (dressing the bare ones) and their h to hashes. Both meet the same frames: pass 2
 * skips the checksums pass 1 checked.
 * Returns 0, or -1 with CorruptFrameError set. */
static int gather_pass(const unsigned char *data, Py_ssize_t size, unsigned long long position,
                       Py_ssize_t want, Py_ssize_t max_bytes, int strict, long long max_frame,
                       PyObject *error, char *out, char *hashes, Py_ssize_t *need,
                       Py_ssize_t *count, Py_ssize_t *skipped_end, uint64_t *first_seq,
                       uint64_t *last_seq, const unsigned char **last_h, Py_ssize_t *taken_bytes,
                       Py_ssize_t *end_out) {
    Py_ssize_t pos = 0, record = 0, end = 0, taken = 0, bytes = 0;
    uint64_t seq = 0, prev = 0;
    const unsigned char *h = NULL;
    int got, bare = 0;
    *skipped_end = 0;
    *first_seq = *last_seq = 0;
    *last_h = NULL;
    while ((got = next_frame(data, size, pos, max_frame, error, out == NULL, &seq, &h, &record,
                             &end, &bare)) == 1 &&
           seq <= position) {
        pos = *skipped_end = end;
    }
    if (got == 1) {
        *first_seq = seq;
        if (strict && seq != position + 1) {
            got = 0; /* a hole, and the batch has records: it ends before it */
        }
    }
    while (got == 1 && taken < want && bytes < max_bytes && (taken == 0 || seq == prev + 1)) {
        Py_ssize_t stored = end - record, n = bare ? stored + DRESSING : stored;
        if (out != NULL) {
            if (bare) {
                dress(out, data + record, stored, h);
            } else {
                memcpy(out, data + record, (size_t)n);
            }
            out[n] = '\n';
            out += n + 1;
            memcpy(hashes + DIGEST * taken, h, DIGEST);
        }
        taken++;
        bytes += n;
        prev = seq;
        *last_h = h;
        pos = end;
        if (taken >= want || bytes >= max_bytes) {
            break; /* the next frame is not looked at */
        }
        got = next_frame(data, size, pos, max_frame, error, out == NULL, &seq, &h, &record, &end,
                         &bare);
    }
    if (got < 0) {
        return -1;
    }
    *need = bytes + taken;
    *count = taken;
    *last_seq = prev;
    *taken_bytes = bytes;
    *end_out = taken ? pos : *skipped_end;
    return 0;
}

/* Resize `body` to `size`, but when it must grow, allocate `capacity` (>= size) at once: the
 * reader appends a batch window by window, and growing to each window's exact end made realloc
 * copy the batch's records once or twice more (~2.6 % of the agent's CPU on raw lines). Within
 * the allocation, the size is set as PyByteArray_Resize's own quick path sets it: that function
 * reallocates down to the exact size when the size is below half the allocation.
 * That reads the bytearray's fields, whose layout and meaning were checked for CPython 3.11 to
 * 3.14 only: 3.15 keeps the bytes in a bytes object of its own (ob_bytes_object, gh-139871).
 * Elsewhere the public call does it all, correct and a little slower. */
static int grow_body(PyObject *body, Py_ssize_t size, Py_ssize_t capacity) {
#if PY_VERSION_HEX >= 0x030F0000 || defined(Py_GIL_DISABLED)
    (void)capacity;
    return PyByteArray_Resize(body, size);
#else
    PyByteArrayObject *array = (PyByteArrayObject *)body;
    if (array->ob_exports > 0 || array->ob_start != array->ob_bytes ||
        size < PyByteArray_GET_SIZE(body)) {
        return PyByteArray_Resize(body, size); /* its own checks and ways */
    }
    if (size + 1 > array->ob_alloc && PyByteArray_Resize(body, capacity) < 0) {
        return -1;
    }
    Py_SET_SIZE(body, size);
    array->ob_start[size] = '\0';
    return 0;
#endif
}

static PyObject *gather_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 || !PyByteArray_CheckExact(args[5]) || !PyByteArray_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "gather_run(data, position, want, max_bytes, strict, body: bytearray, "
                        "hashes: bytearray, max_frame, error, reserve)");
        return NULL;
    }
    unsigned long long position = PyLong_AsUnsignedLongLong(args[1]);
    Py_ssize_t want = PyLong_AsSsize_t(args[2]), max_bytes = PyLong_AsSsize_t(args[3]);
    int strict = PyObject_IsTrue(args[4]);
    long long max_frame = PyLong_AsLongLong(args[7]);
    Py_ssize_t reserve = PyLong_AsSsize_t(args[9]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *body = args[5], *hashes = args[6], *error = args[8];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t need, count, skipped_end, taken_bytes, end;
    uint64_t first_seq, last_seq;
    const unsigned char *last_h;
    PyObject *out = NULL;
    if (gather_pass(data, view.len, position, want, max_bytes, strict, max_frame, error, NULL,
                    NULL, &need, &count, &skipped_end, &first_seq, &last_seq, &last_h,
                    &taken_bytes, &end) < 0) {
        goto done;
    }
    if (count > 0) {
        /* One resize each, to the exact size: growing a record at a time reallocated (and
         * copied) the body a hundred times over. */
        Py_ssize_t at = PyByteArray_GET_SIZE(body), hat = PyByteArray_GET_SIZE(hashes);
        if (reserve > PY_SSIZE_T_MAX - 1 - at) {
            reserve = PY_SSIZE_T_MAX - 1 - at; /* a hint: never a size past what can be asked */
        }
        if (grow_body(body, at + need, at + (reserve > need ? reserve : need)) < 0) {
            goto done;
        }
        if (PyByteArray_Resize(hashes, hat + DIGEST * count) < 0) {
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            (void)PyByteArray_Resize(body, at); /* back to what the caller gave: a shrink */
            PyErr_Restore(type, value, traceback);
            goto done;
        }
        if (gather_pass(data, view.len, position, want, max_bytes, strict, max_frame, error,
                        PyByteArray_AS_STRING(body) + at, PyByteArray_AS_STRING(hashes) + hat,
                        &need, &count, &skipped_end, &first_seq, &last_seq, &last_h,
                        &taken_bytes, &end) < 0) {
            goto done;
        }
    }
    PyObject *digest = last_h == NULL ? Py_NewRef(Py_None)
                                      : PyBytes_FromStringAndSize((const char *)last_h, DIGEST);
    if (digest != NULL) {
        out = Py_BuildValue("(nnKKNnn)", skipped_end, count, (unsigned long long)first_seq,
                            (unsigned long long)last_seq, digest, taken_bytes, end);
    }
done:
    PyBuffer_Release(&view);
    return out;
}

PyDoc_STRVAR(verify_body_doc,
             "verify_body(prev, data, begin, count, first_seq, loads, dumps, option, errors)\n--\n\n"
             "The lines of data[begin:] checked as agent.collector.batch.verify_wire_py checks "
             "them, in place: (ends, gap seqs, sealed), ends the offset in data where each line "
             "ends as native 8-byte ints; None where verify_wire_py answers None, or if "
             "data[begin:] does not hold count lines (as lines.BodyLines.split finds them).");

/* --- the collector's check of a wire line without parsing it into objects ---------------------
 *
 * A wire line is canonical(record)[:-1] + ',"h":"<hex>"}'. verify_text must know that its bytes
 * up to that tail, closed by "}", are exactly orjson's canonical encoding (sorted keys) of the
 * record the line holds: only then does hashing those bytes equal hashing canonical(record).
 * The general way parses the line (loads) and encodes it again (dumps). canonical_object()
 * decides it directly for the common shape of records, and answers "unsure" for anything else,
 * which then takes the general way: so a mistake here can only cost time if it says unsure too
 * often, and the tests hold it to the general way on every line they make or mangle.
 *
 * Sure only for: objects whose keys are ASCII strings without escapes, in strictly increasing
 * byte order (for ASCII, the code point order orjson sorts by); arrays; strings of printable
 * ASCII and orjson's escapes (\" \\ \b \t \n \f \r, \u00xx in lower case for the other control
 * characters); integers of at most 18 digits without leading zeros, not "-0" (orjson writes any
 * such int so); true, false, null; at most 64 levels deep. Anything else (a float, a non-ASCII
 * byte, a big integer, an escaped key) is unsure. */

typedef struct {
    const unsigned char *at, *end;
    int depth;
} Scan;

#define CANON_UNSURE 0
#define CANON_OK 1

static int canon_value(Scan *s);

/* A string at s->at (its opening quote); *plain: it holds no escape. */
static int canon_string(Scan *s, int *plain) {
    const unsigned char *p = s->at + 1, *end = s->end;
    *plain = 1;
    while (p < end) {
        p += plain_prefix(p, end - p);
        if (p >= end) {
            break;
        }
        unsigned char c = *p;
        if (c == '"') {
            s->at = p + 1;
            return CANON_OK;
        }
        if (c >= 0x80 || c < 0x20) {
            return CANON_UNSURE;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        *plain = 0;
        if (p + 1 >= end) {
            return CANON_UNSURE;
        }
        unsigned char e = p[1];
        if (e == '"' || e == '\\' || e == 'b' || e == 't' || e == 'n' || e == 'f' || e == 'r') {
            p += 2;
            continue;
        }
        /* \u00xx, lower-case hex, only for the control characters without a short escape */
        if (e != 'u' || end - p < 6 || p[2] != '0' || p[3] != '0' || (p[4] != '0' && p[4] != '1')) {
            return CANON_UNSURE;
        }
        unsigned char low = p[5];
        int value;
        if (low >= '0' && low <= '9') {
            value = low - '0';
        } else if (low >= 'a' && low <= 'f') {
            value = low - 'a' + 10;
        } else {
            return CANON_UNSURE;
        }
        value += (p[4] - '0') * 16;
        if (value == '\b' || value == '\t' || value == '\n' || value == '\f' || value == '\r') {
            return CANON_UNSURE;
        }
        p += 6;
    }
    return CANON_UNSURE;
}

/* A member's key and its ":" at s->at: a string without escapes, after the last key (*last) in
 * strictly increasing byte order (sorted, no key twice); it becomes the last key. */
static int canon_key(Scan *s, const unsigned char **last, Py_ssize_t *last_len,
                     const unsigned char **key, Py_ssize_t *key_len) {
    if (s->at >= s->end || *s->at != '"') {
        return CANON_UNSURE;
    }
    *key = s->at + 1;
    int plain;
    if (canon_string(s, &plain) != CANON_OK || !plain) {
        return CANON_UNSURE;
    }
    *key_len = s->at - 1 - *key;
    if (*last != NULL) {
        Py_ssize_t common = *key_len < *last_len ? *key_len : *last_len;
        int order = memcmp(*last, *key, (size_t)common);
        if (order > 0 || (order == 0 && *last_len >= *key_len)) {
            return CANON_UNSURE;
        }
    }
    *last = *key;
    *last_len = *key_len;
    if (s->at >= s->end || *s->at != ':') {
        return CANON_UNSURE;
    }
    s->at++;
    return CANON_OK;
}

static int canon_number(Scan *s) {
    const unsigned char *p = s->at, *end = s->end;
    if (*p == '-') {
        p++;
    }
    const unsigned char *digits = p;
    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }
    Py_ssize_t n = p - digits;
    if (n == 0 || n > 18 || (digits[0] == '0' && (n > 1 || digits != s->at))) {
        return CANON_UNSURE; /* none, too long, a leading zero, or "-0" */
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) {
        return CANON_UNSURE; /* a float */
    }
    s->at = p;
    return CANON_OK;
}

static int canon_literal(Scan *s, const char *word, size_t len) {
    if ((size_t)(s->end - s->at) < len || memcmp(s->at, word, len) != 0) {
        return CANON_UNSURE;
    }
    s->at += len;
    return CANON_OK;
}

static int canon_array(Scan *s) {
    s->at++; /* [ */
    if (s->at < s->end && *s->at == ']') {
        s->at++;
        return CANON_OK;
    }
    for (;;) {
        if (canon_value(s) != CANON_OK || s->at >= s->end) {
            return CANON_UNSURE;
        }
        unsigned char c = *s->at++;
        if (c == ']') {
            return CANON_OK;
        }
        if (c != ',') {
            return CANON_UNSURE;
        }
    }
}

/* The object at s->at (a nested one: the top level is canonical_record's). */
static int canon_object(Scan *s) {
    s->at++; /* { */
    if (s->at < s->end && *s->at == '}') {
        s->at++;
        return CANON_OK;
    }
    const unsigned char *last = NULL;
    Py_ssize_t last_len = 0;
    for (;;) {
        const unsigned char *key;
        Py_ssize_t key_len;
        if (canon_key(s, &last, &last_len, &key, &key_len) != CANON_OK ||
            canon_value(s) != CANON_OK || s->at >= s->end) {
            return CANON_UNSURE;
        }
        unsigned char c = *s->at++;
        if (c == '}') {
            return CANON_OK;
        }
        if (c != ',') {
            return CANON_UNSURE;
        }
    }
}

static int canon_value(Scan *s) {
    if (s->at >= s->end) {
        return CANON_UNSURE;
    }
    int made;
    if (++s->depth > 64) {
        return CANON_UNSURE;
    }
    unsigned char c = *s->at;
    int plain;
    if (c == '"') {
        made = canon_string(s, &plain);
    } else if (c == '{') {
        made = canon_object(s);
    } else if (c == '[') {
        made = canon_array(s);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        made = canon_number(s);
    } else if (c == 't') {
        made = canon_literal(s, "true", 4);
    } else if (c == 'f') {
        made = canon_literal(s, "false", 5);
    } else if (c == 'n') {
        made = canon_literal(s, "null", 4);
    } else {
        made = CANON_UNSURE;
    }
    s->depth--;
    return made;
}

/* Whether body[0:n] + "}" is surely the canonical encoding of a record whose "seq" is `seq`:
 * then *type is its "type" (a new str reference, or NULL without one). 1: sure; 0: unsure (or
 * not seq); -1: an error (memory). */
static int canonical_record(const char *body, Py_ssize_t n, long long seq, PyObject **type) {
    *type = NULL;
    if (n < 2 || body[0] != '{') {
        return 0;
    }
    /* The members are scanned up to n, where the closing "}" stands in the canonical bytes (it
     * is not in body: the wire's tail is there). */
    const unsigned char *seq_at = NULL, *type_at = NULL, *last = NULL;
    Py_ssize_t last_len = 0;
    Scan s = {(const unsigned char *)body + 1, (const unsigned char *)body + n, 0};
    for (;;) {
        const unsigned char *key;
        Py_ssize_t key_len;
        if (canon_key(&s, &last, &last_len, &key, &key_len) != CANON_OK) {
            return 0;
        }
        if (key_len == 1 && key[0] == 'h') {
            return 0; /* the wire's h is its own, after the record */
        }
        if (key_len == 3 && memcmp(key, "seq", 3) == 0) {
            seq_at = s.at;
        } else if (key_len == 4 && memcmp(key, "type", 4) == 0) {
            type_at = s.at;
        }
        if (canon_value(&s) != CANON_OK) {
            return 0;
        }
        if (s.at == s.end) {
            break;
        }
        if (*s.at++ != ',') {
            return 0;
        }
    }
    if (seq_at == NULL) {
        return 0;
    }
    /* seq: the digits of `seq` exactly (a canonical int is written one way) */
    char digits[24];
    int len = 0;
    unsigned long long magnitude = (unsigned long long)seq;
    if (seq < 0) {
        digits[len++] = '-';
        magnitude = 0ULL - magnitude;
    }
    len += put_digits(digits + len, magnitude); /* snprintf was ~1.5 % of the collector's CPU */
    if ((size_t)(s.end - seq_at) < (size_t)len || memcmp(seq_at, digits, (size_t)len) != 0 ||
        (seq_at + len < s.end && seq_at[len] != ',')) {
        return 0;
    }
    if (type_at != NULL) {
        if (*type_at != '"') {
            return 0; /* a "type" that is not a str: the general way */
        }
        Scan t = {type_at, s.end, 0};
        int plain;
        if (canon_string(&t, &plain) != CANON_OK || !plain) {
            return 0;
        }
        *type = PyUnicode_FromStringAndSize((const char *)type_at + 1, t.at - type_at - 2);
        if (*type == NULL) {
            return -1;
        }
    }
    return 1;
}

#define WIRE_TAIL (H_OPEN_LEN + 2 * DIGEST + 2)

/* 1 if hex (2 * DIGEST characters) is digest in lowercase hex, as a wire h is written. */
static int is_hex_of(const unsigned char *hex, const unsigned char *digest) {
    for (int i = 0; i < DIGEST; i++) {
        if (hex[2 * i] != HEX_DIGITS[digest[i] >> 4] || hex[2 * i + 1] != HEX_DIGITS[digest[i] & 15]) {
            return 0;
        }
    }
    return 1;
}

/* verify_body's way for the common line, in place: text[:len] checked by canonical_record and
 * hashed as it is. 1 if it is the wire form of the next record (prev becomes its digest, and
 * *type_out its "type" or NULL, a new ref); 0 if it is surely not (its h does not verify);
 * 2 if unsure (the general way decides); -1 with an exception set. */
static int verify_text(const char *text, Py_ssize_t len, unsigned char *prev, long long seq,
                       PyObject **type_out) {
    Py_ssize_t body = len - WIRE_TAIL;
    PyObject *type = NULL;
    int sure = len >= WIRE_TAIL && memcmp(text + body, H_OPEN, H_OPEN_LEN) == 0 &&
                       text[len - 2] == '"' && text[len - 1] == '}'
                   ? canonical_record(text, body, seq, &type)
                   : 0;
    if (sure <= 0) {
        return sure < 0 ? -1 : 2;
    }
    unsigned char digest[DIGEST];
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, prev, DIGEST);
    SHA256_Update(&sha, text, (size_t)body);
    SHA256_Update(&sha, "}", 1);
    SHA256_Final(digest, &sha);
    memcpy(prev, digest, DIGEST);
    if (!is_hex_of((const unsigned char *)text + body + H_OPEN_LEN, digest)) {
        Py_XDECREF(type);
        return 0;
    }
    *type_out = type;
    return 1;
}

/* The general way, for a line verify_text is unsure of: parsed (loads) and encoded again
 * (dumps). 1 if `line` (bytes) is the wire form of the next record after `prev` with seq `seq`:
 * then `prev` becomes its digest and *type_out its "type" or NULL (new ref). 0 if it is not; -1
 * with an exception set on errors other than `errors` (orjson's). */
static int verify_parsed(PyObject *line, unsigned char *prev, long long seq, PyObject *loads,
                         PyObject *dumps, PyObject *option, PyObject *errors,
                         PyObject **type_out) {
    const Py_ssize_t tail = WIRE_TAIL;
    PyObject *record = PyObject_Vectorcall(loads, &line, 1, NULL);
    PyObject *h = NULL, *got = NULL, *canonical = NULL;
    int ok = 0;
    if (record == NULL) {
        goto error;
    }
    if (!PyDict_CheckExact(record)) {
        goto done;
    }
    h = PyDict_GetItemWithError(record, str_h);
    if (h == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto done;
    }
    Py_INCREF(h);
    if (PyDict_DelItem(record, str_h) < 0) {
        goto error;
    }
    got = PyDict_GetItemWithError(record, str_seq); /* borrowed */
    if (got == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto done;
    }
    if (!PyUnicode_CheckExact(h) || !PyLong_CheckExact(got)) {
        goto done;
    }
    int overflow = 0;
    long long got_seq = PyLong_AsLongLongAndOverflow(got, &overflow);
    if (overflow || got_seq != seq) {
        goto done;
    }
    const char *text = PyBytes_AS_STRING(line);
    Py_ssize_t len = PyBytes_GET_SIZE(line);
    if (len < tail) {
        goto done;
    }
    PyObject *args[2] = {record, option};
    canonical = PyObject_Vectorcall(dumps, args, 1, option_kwnames);
    if (canonical == NULL) {
        goto error;
    }
    /* canonical must be the line's bytes up to the wire tail, then "}" */
    Py_ssize_t body = len - tail;
    if (PyBytes_GET_SIZE(canonical) != body + 1 ||
        memcmp(PyBytes_AS_STRING(canonical), text, (size_t)body) != 0 ||
        PyBytes_AS_STRING(canonical)[body] != '}') {
        goto done;
    }
    unsigned char digest[DIGEST];
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, prev, DIGEST);
    SHA256_Update(&sha, PyBytes_AS_STRING(canonical), (size_t)body + 1);
    SHA256_Final(digest, &sha);
    memcpy(prev, digest, DIGEST); /* the chain moves on even if h is wrong: the caller stops */
    if (PyUnicode_GET_LENGTH(h) != 2 * DIGEST || PyUnicode_KIND(h) != PyUnicode_1BYTE_KIND) {
        goto done;
    }
    if (!is_hex_of(PyUnicode_1BYTE_DATA(h), digest)) {
        goto done;
    }
    if (memcmp(text + body, H_OPEN, H_OPEN_LEN) != 0) {
        goto done;
    }
    PyObject *type = PyDict_GetItemWithError(record, str_type);
    if (type == NULL && PyErr_Occurred()) {
        goto error;
    }
    Py_XINCREF(type);
    *type_out = type;
    ok = 1;
    goto done;
error:
    if (PyErr_ExceptionMatches(errors)) {
        PyErr_Clear(); /* not JSON, or deeper than orjson encodes: left to the general path */
        ok = 0;
    } else {
        ok = -1;
    }
done:
    Py_XDECREF(record);
    Py_XDECREF(h);
    Py_XDECREF(canonical);
    return ok;
}

static PyObject *verify_body(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "verify_body takes 9 arguments");
        return NULL;
    }
    PyObject *prev_obj = args[0], *data_obj = args[1];
    Py_ssize_t begin = PyLong_AsSsize_t(args[2]), count = PyLong_AsSsize_t(args[3]);
    long long seq = PyLong_AsLongLong(args[4]);
    PyObject *loads = args[5], *dumps = args[6], *option = args[7], *errors = args[8];
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!PyBytes_Check(prev_obj) || PyBytes_GET_SIZE(prev_obj) != DIGEST ||
        !PyBytes_CheckExact(data_obj) || begin < 0 || count < 0 || count > PY_SSIZE_T_MAX / 8) {
        PyErr_SetString(PyExc_TypeError,
                        "verify_body takes 32 bytes of prev, a body (bytes) and where its lines "
                        "begin and how many there are");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(data_obj);
    Py_ssize_t size = PyBytes_GET_SIZE(data_obj), pos = begin;
    unsigned char prev[DIGEST];
    memcpy(prev, PyBytes_AS_STRING(prev_obj), DIGEST);
    PyObject *ends = PyBytes_FromStringAndSize(NULL, count * 8), *gaps = PyList_New(0);
    PyObject *last_type = NULL;
    if (ends == NULL || gaps == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i > 0) {
            if (seq == LLONG_MAX) {
                goto not_wire; /* seq 2**63 and on: left to the general path */
            }
            seq++;
        }
        if (pos >= size) {
            goto not_wire; /* fewer lines than counted: the caller counts them */
        }
        const char *newline = memchr(data + pos, '\n', (size_t)(size - pos));
        Py_ssize_t end = newline != NULL ? newline - data : size;
        PyObject *type = NULL;
        int ok = verify_text(data + pos, end - pos, prev, seq, &type);
        if (ok == 2) { /* unsure in place: parsed and encoded again, as a bytes of its own */
            PyObject *line = PyBytes_FromStringAndSize(data + pos, end - pos);
            if (line == NULL) {
                goto fail;
            }
            ok = verify_parsed(line, prev, seq, loads, dumps, option, errors, &type);
            Py_DECREF(line);
        }
        if (ok < 0) {
            goto fail;
        }
        if (ok == 0) {
            goto not_wire;
        }
        int is_gap = type != NULL ? PyObject_RichCompareBool(type, str_gap, Py_EQ) : 0;
        PyObject *seq_obj = is_gap == 1 ? PyLong_FromLongLong(seq) : NULL;
        int bad = is_gap < 0 || (is_gap == 1 && (seq_obj == NULL || PyList_Append(gaps, seq_obj) < 0));
        Py_XDECREF(seq_obj);
        Py_XDECREF(last_type);
        last_type = type;
        if (bad) {
            goto fail;
        }
        long long at = (long long)end;
        memcpy(PyBytes_AS_STRING(ends) + 8 * i, &at, sizeof at);
        pos = end + 1;
    }
    if (pos < size) {
        goto not_wire; /* more lines than counted: the caller counts them */
    }
    int sealed = 0;
    if (last_type != NULL) {
        sealed = PyObject_RichCompareBool(last_type, str_seal, Py_EQ);
        if (sealed < 0) {
            goto fail;
        }
    }
    Py_XDECREF(last_type);
    return Py_BuildValue("(NNO)", ends, gaps, sealed ? Py_True : Py_False);
not_wire:
    Py_DECREF(ends);
    Py_DECREF(gaps);
    Py_XDECREF(last_type);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(ends);
    Py_XDECREF(gaps);
    Py_XDECREF(last_type);
    return NULL;
}

static PyMethodDef methods[] = {
    {"link", (PyCFunction)(void (*)(void))chain_link, METH_FASTCALL, link_doc},
    {"crc32", py_crc32, METH_O, crc32_doc},
    {"parse_run", (PyCFunction)(void (*)(void))parse_run, METH_FASTCALL, parse_run_doc},
    {"gather_run", (PyCFunction)(void (*)(void))gather_run, METH_FASTCALL, gather_run_doc},
    {"verify_body", (PyCFunction)(void (*)(void))verify_body, METH_FASTCALL, verify_body_doc},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *Py_UNUSED(module)) {
    str_record = PyUnicode_InternFromString("record");
    str_checkpoint = PyUnicode_InternFromString("checkpoint");
    str_seq = PyUnicode_InternFromString("seq");
    str_h = PyUnicode_InternFromString("h");
    str_type = PyUnicode_InternFromString("type");
    str_gap = PyUnicode_InternFromString("gap");
    str_seal = PyUnicode_InternFromString("seal");
    str_begin = PyUnicode_InternFromString("begin");
    str_end = PyUnicode_InternFromString("end");
    str_offset = PyUnicode_InternFromString("offset");
    str_data = PyUnicode_InternFromString("data");
    str_head = PyUnicode_InternFromString("head");
    str_tail = PyUnicode_InternFromString("tail");
    str_source = PyUnicode_InternFromString("source");
    str_key = PyUnicode_InternFromString("key");
    str_path = PyUnicode_InternFromString("path");
    str_blob = PyUnicode_InternFromString("blob");
    init_escapes();
    init_crc_table();
    if (!str_begin || !str_end || !str_offset || !str_data || !str_head || !str_tail ||
        !str_source || !str_key || !str_path || !str_blob) {
        return -1;
    }
    /* Interned: orjson matches keyword names by identity first. */
    PyObject *option = PyUnicode_InternFromString("option");
    option_kwnames = option == NULL ? NULL : PyTuple_Pack(1, option);
    Py_XDECREF(option);
    if (!str_record || !str_checkpoint || !str_seq || !str_h || !str_type || !str_gap || !str_seal ||
        !option_kwnames) {
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
    .m_name = "agent._speedups",
    .m_doc = "Hot loops in C (see agent/compiled.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModuleDef_Init(&module_def); }
