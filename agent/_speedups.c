/* The buffer writer's per-record loop in C: chain hash, wire form and frame of each record.
 *
 * agent/buffer/chain.py holds the same loop in Python: it is the reference (tests hold the two
 * equal, byte for byte) and the fallback where this module was not built. Read it first; this
 * file follows it line by line. The frame format is agent/buffer/segment.py's:
 *
 *   frame = u32 body_len | u32 crc32(body) | body                         (little endian)
 *   body  = u64 seq | 32-byte h | u16 cp_len | checkpoint | wire
 *
 * Records are still encoded by orjson (the `dumps` passed in): canonical JSON stays one
 * implementation. What moves here is everything after it: SHA-256 over prev || canonical
 * (OpenSSL, as hashlib uses), the hex digest, the wire form, the checkpoint bytes, crc32 (zlib,
 * as the zlib module uses) and the frame, written into one buffer for the whole run.
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

#define DIGEST 32
#define HEAD 8                /* u32 body_len, u32 crc */
#define BODY_HEAD (8 + 32 + 2) /* u64 seq, h, u16 cp_len */
#define H_OPEN ",\"h\":\""
#define H_OPEN_LEN 6
#define MAX_CP 0xFFFF

static PyObject *str_record, *str_checkpoint, *str_seq, *str_h, *str_type, *str_gap, *str_seal;
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

/* crc32 (zlib's: reflected 0xEDB88320, pre- and post-inverted) of a frame body, the checksum
 * segment.py's frames carry. Frames are a few hundred bytes, where zlib 1.2's table-driven crc32
 * runs ~1.3 GB/s: about a tenth of the writer's CPU per record and as much again in the reader.
 * On x86-64 CPUs with PCLMULQDQ the bulk is folded 64 bytes at a time with carry-less multiplies
 * (Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction",
 * Intel, 2009: the folding and Barrett constants for this polynomial are in its appendix); the
 * tail of fewer than 16 bytes, short inputs and other CPUs use zlib. tests/buffer/test_chain.py
 * holds it equal to zlib.crc32 on every length and alignment it tries. */
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

static uint32_t frame_crc(const unsigned char *buf, size_t len) {
    uLong crc = 0L;
#ifdef HAVE_CLMUL_CRC
    if (len >= 64 && have_clmul()) {
        size_t bulk = len & ~(size_t)15;
        uint32_t state = crc32_fold(buf, bulk, 0xFFFFFFFFu);
        /* zlib's crc32 continues from a finished crc: un-invert the state for it */
        crc = (uLong)(state ^ 0xFFFFFFFFu);
        buf += bulk;
        len -= bulk;
    }
#endif
    /* zlib takes a uInt length: 4 GiB and more in pieces, as the zlib module does */
    for (; len > 0x40000000u; buf += 0x40000000u, len -= 0x40000000u) {
        crc = crc32(crc, buf, 0x40000000u);
    }
    return (uint32_t)crc32(crc, buf, (uInt)len);
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
    if (!PyBytes_Check(canonical) || PyBytes_GET_SIZE(canonical) < 2 ||
        PyBytes_AS_STRING(canonical)[PyBytes_GET_SIZE(canonical) - 1] != '}') {
        Py_DECREF(canonical);
        PyErr_SetString(PyExc_ValueError, "canonical encoding is not a JSON object");
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

/* cp_prefix(source, key, path) for the Checkpoint `cp`: a reference the cache holds, or NULL. */
static PyObject *checkpoint_prefix(PrefixCache *cache, PyObject *cp, PyObject *cp_prefix) {
    if (!PyTuple_Check(cp) || PyTuple_GET_SIZE(cp) != 4) {
        PyErr_SetString(PyExc_TypeError, "checkpoint must be a Checkpoint");
        return NULL;
    }
    PyObject *args[3] = {PyTuple_GET_ITEM(cp, 0), PyTuple_GET_ITEM(cp, 1), PyTuple_GET_ITEM(cp, 3)};
    if (cache->prefix != NULL && args[0] == cache->source && args[1] == cache->key &&
        args[2] == cache->path) {
        return cache->prefix;
    }
    /* Held: the call below runs Python code, which may drop the tuple's hold on them. */
    Py_INCREF(args[0]);
    Py_INCREF(args[1]);
    Py_INCREF(args[2]);
    PyObject *prefix = PyObject_Vectorcall(cp_prefix, args, 3, NULL);
    if (prefix != NULL && !PyBytes_Check(prefix)) {
        Py_CLEAR(prefix);
        PyErr_SetString(PyExc_TypeError, "checkpoint prefix must be bytes");
    }
    prefix_cache_clear(cache);
    if (prefix == NULL) {
        Py_DECREF(args[0]);
        Py_DECREF(args[1]);
        Py_DECREF(args[2]);
        return NULL;
    }
    cache->source = args[0];
    cache->key = args[1];
    cache->path = args[2];
    cache->prefix = prefix;
    return prefix;
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
        if (!overflow) {
            *len = snprintf(small, small_len, "%lld", value);
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

/* One record's wire form: canonical[:-1] + ',"h":"' + hex(digest) + '"}'. New reference. */
static PyObject *wire_form(PyObject *canonical, const unsigned char *digest) {
    static const char hexdigits[] = "0123456789abcdef";
    Py_ssize_t n = PyBytes_GET_SIZE(canonical) - 1;
    PyObject *wire = PyBytes_FromStringAndSize(NULL, n + H_OPEN_LEN + 2 * DIGEST + 2);
    if (wire == NULL) {
        return NULL;
    }
    char *p = PyBytes_AS_STRING(wire);
    memcpy(p, PyBytes_AS_STRING(canonical), (size_t)n);
    p += n;
    memcpy(p, H_OPEN, H_OPEN_LEN);
    p += H_OPEN_LEN;
    for (int i = 0; i < DIGEST; i++) {
        *p++ = hexdigits[digest[i] >> 4];
        *p++ = hexdigits[digest[i] & 15];
    }
    p[0] = '"';
    p[1] = '}';
    return wire;
}

PyDoc_STRVAR(link_doc,
             "link(items, start, seq, prev, room, used, limit, one, dumps, option, cp_prefix, "
             "on_error, out)\n--\n\nSee agent.buffer.chain.link_py: the same loop, the same results.");

static PyObject *chain_link(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "link takes 13 arguments");
        return NULL;
    }
    PyObject *items = args[0];
    PyObject *prev_obj = args[3];
    PyObject *dumps = args[8], *option = args[9], *cp_prefix = args[10], *on_error = args[11];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* seq as the frames hold it: a u64 (a negative one is refused, as struct refuses it) */
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[2]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    long long room = PyLong_AsLongLong(args[4]);
    if (room == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long used = PyLong_AsLongLong(args[5]);
    if (used == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long limit = PyLong_AsLongLong(args[6]);
    if (limit == -1 && PyErr_Occurred()) {
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
    if (!PyByteArray_CheckExact(args[12])) {
        PyErr_SetString(PyExc_TypeError, "out must be a bytearray (not a subclass)");
        return NULL;
    }
    unsigned char prev[DIGEST];
    memcpy(prev, PyBytes_AS_STRING(prev_obj), DIGEST);

    Out out = {.array = args[12], .held = 0, .len = 0};
    PrefixCache cache = {NULL, NULL, NULL, NULL};
    if (out_hold(&out) < 0) {
        return NULL;
    }
    PyObject *entries = PyList_New(0);
    PyObject *cps = PyList_New(0);
    PyObject *result = NULL;
    int segment_full = 0;
    Py_ssize_t i = start;
    if (entries == NULL || cps == NULL) {
        goto done;
    }
    for (; i < PyList_GET_SIZE(items); i++) {
        if (room - out.len <= 0) {
            break;
        }
        if (seq == ULLONG_MAX) {
            PyErr_SetString(PyExc_OverflowError, "seq past the frames' u64");
            goto done;
        }
        /* Held: the calls below run Python code (on_error, a record's __setitem__), which may
         * take the item out of `items`. */
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        PyObject *record = PyObject_GetAttr(item, str_record);
        if (record == NULL) {
            Py_DECREF(item);
            goto done;
        }
        PyObject *seq_obj = PyLong_FromUnsignedLongLong(seq + 1);
        if (seq_obj == NULL || PyObject_SetItem(record, str_seq, seq_obj) < 0) {
            Py_XDECREF(seq_obj);
            Py_DECREF(record);
            Py_DECREF(item);
            goto done;
        }
        PyObject *canonical = encode(record, dumps, option, on_error);
        Py_DECREF(record);
        if (canonical == NULL) {
            Py_DECREF(seq_obj);
            Py_DECREF(item);
            goto done;
        }
        unsigned char digest[DIGEST];
        SHA256_CTX sha;
        SHA256_Init(&sha);
        SHA256_Update(&sha, prev, DIGEST);
        SHA256_Update(&sha, PyBytes_AS_STRING(canonical), (size_t)PyBytes_GET_SIZE(canonical));
        SHA256_Final(digest, &sha);
        PyObject *wire = wire_form(canonical, digest);
        Py_DECREF(canonical);
        PyObject *cp = PyObject_GetAttr(item, str_checkpoint);
        Py_DECREF(item);
        PyObject *prefix = NULL, *digits_owner = NULL;
        char small[24];
        const char *digits = NULL;
        Py_ssize_t digits_len = 0;
        if (wire == NULL || cp == NULL) {
            goto fail_record;
        }
        Py_ssize_t cp_len = 0;
        if (cp != Py_None) {
            prefix = checkpoint_prefix(&cache, cp, cp_prefix);
            if (prefix == NULL || offset_digits(PyTuple_GET_ITEM(cp, 2), small, sizeof small,
                                                &digits, &digits_len, &digits_owner) < 0) {
                goto fail_record;
            }
            cp_len = PyBytes_GET_SIZE(prefix) + digits_len + 1;
            if (cp_len > MAX_CP) {
                PyErr_SetString(PyExc_ValueError, "checkpoint longer than 65535 bytes");
                goto fail_record;
            }
        }
        Py_ssize_t body_len = BODY_HEAD + cp_len + PyBytes_GET_SIZE(wire);
        Py_ssize_t frame_len = HEAD + body_len;
        if ((uint64_t)body_len > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "frame body longer than 4 GiB");
            goto fail_record;
        }
        /* used + made > 0 and used + made + frame_len > limit, without overflowing */
        int past_limit;
        if (used > LLONG_MAX - out.len) {
            past_limit = 1;
        } else {
            long long in_segment = used + out.len;
            past_limit = in_segment > 0 && (limit < in_segment || frame_len > limit - in_segment);
        }
        if (past_limit) {
            segment_full = 1; /* this record starts the next segment: the caller calls again */
            Py_DECREF(seq_obj);
            Py_DECREF(wire);
            Py_DECREF(cp);
            Py_XDECREF(digits_owner);
            break;
        }
        if (out_reserve(&out, frame_len) < 0) {
            goto fail_record;
        }
        unsigned char *frame = (unsigned char *)out.view.buf + out.len;
        unsigned char *body = frame + HEAD;
        put_u64(body, (uint64_t)seq + 1);
        memcpy(body + 8, digest, DIGEST);
        put_u16(body + 40, (uint16_t)cp_len);
        if (cp_len) {
            unsigned char *at = body + BODY_HEAD;
            Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
            memcpy(at, PyBytes_AS_STRING(prefix), (size_t)prefix_len);
            memcpy(at + prefix_len, digits, (size_t)digits_len);
            at[prefix_len + digits_len] = '}';
        }
        Py_CLEAR(digits_owner);
        memcpy(body + BODY_HEAD + cp_len, PyBytes_AS_STRING(wire), (size_t)PyBytes_GET_SIZE(wire));
        put_u32(frame, (uint32_t)body_len);
        put_u32(frame + 4, frame_crc(body, (size_t)body_len));
        PyObject *h = PyBytes_FromStringAndSize((const char *)digest, DIGEST);
        PyObject *entry = h == NULL ? NULL : PyTuple_Pack(3, seq_obj, h, wire);
        Py_XDECREF(h);
        if (entry == NULL || PyList_Append(entries, entry) < 0 ||
            (cp != Py_None && PyList_Append(cps, cp) < 0)) {
            Py_XDECREF(entry);
            goto fail_record;
        }
        Py_DECREF(entry);
        Py_DECREF(seq_obj);
        Py_DECREF(wire);
        Py_DECREF(cp);
        out.len += frame_len;
        memcpy(prev, digest, DIGEST);
        seq += 1;
        if (one) {
            i++;
            break;
        }
        continue;
    fail_record:
        Py_DECREF(seq_obj);
        Py_XDECREF(wire);
        Py_XDECREF(cp);
        Py_XDECREF(digits_owner);
        goto done;
    }
    result = Py_BuildValue("(nnOOO)", i, out.len, entries, cps, segment_full ? Py_True : Py_False);
done:
    out_release(&out);
    prefix_cache_clear(&cache);
    Py_XDECREF(entries);
    Py_XDECREF(cps);
    return result;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int corrupt(PyObject *error, Py_ssize_t offset, const char *reason) {
    PyObject *exc = PyObject_CallFunction(error, "ns", offset, reason);
    if (exc != NULL) {
        PyErr_SetObject(error, exc);
        Py_DECREF(exc);
    }
    return -1;
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
    while (pos + HEAD <= size && count < limit) {
        uint32_t length = get_u32(data + pos), crc = get_u32(data + pos + 4);
        if (length < BODY_HEAD || (long long)length > max_frame) {
            char reason[64];
            snprintf(reason, sizeof reason, "impossible length %u", length);
            corrupt(error, pos, reason);
            goto fail;
        }
        Py_ssize_t start = pos + HEAD, end = start + (Py_ssize_t)length;
        if (end > size) {
            break;
        }
        if (frame_crc(data + start, length) != crc) {
            corrupt(error, pos, "checksum mismatch");
            goto fail;
        }
        const unsigned char *body = data + start;
        uint64_t seq = 0;
        for (int i = 7; i >= 0; i--) {
            seq = seq << 8 | body[i];
        }
        Py_ssize_t cp_len = (Py_ssize_t)body[40] | (Py_ssize_t)body[41] << 8;
        if (BODY_HEAD + cp_len > (Py_ssize_t)length) {
            corrupt(error, pos, "checkpoint overruns frame");
            goto fail;
        }
        PyObject *seq_obj = PyLong_FromUnsignedLongLong(seq);
        PyObject *h = PyBytes_FromStringAndSize((const char *)body + 8, DIGEST);
        PyObject *record = PyBytes_FromStringAndSize((const char *)body + BODY_HEAD + cp_len,
                                                     (Py_ssize_t)length - BODY_HEAD - cp_len);
        PyObject *end_obj = PyLong_FromSsize_t(end);
        int bad = !seq_obj || !h || !record || !end_obj || PyList_Append(seqs, seq_obj) < 0 ||
                  PyList_Append(hashes, h) < 0 || PyList_Append(records, record) < 0 ||
                  PyList_Append(ends, end_obj) < 0;
        Py_XDECREF(seq_obj);
        Py_XDECREF(h);
        Py_XDECREF(record);
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

PyDoc_STRVAR(verify_wire_doc,
             "verify_wire(prev, lines, first_seq, loads, dumps, option, errors)\n--\n\n"
             "See agent.collector.batch.verify_wire_py: the same checks, the same result.");

/* 1 if `line` (bytes) is the wire form of the next record after `prev` with seq `seq`: then
 * `prev` becomes its digest, *h_out its h (new ref) and *type_out its "type" or NULL (new ref).
 * 0 if it is not; -1 with an exception set on errors other than `errors` (orjson's). */
static int verify_line(PyObject *line, unsigned char *prev, long long seq, PyObject *loads,
                       PyObject *dumps, PyObject *option, PyObject *errors, PyObject **h_out,
                       PyObject **type_out) {
    static const char hexdigits[] = "0123456789abcdef";
    const Py_ssize_t tail = H_OPEN_LEN + 2 * DIGEST + 2;
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
    const Py_UCS1 *hex = PyUnicode_1BYTE_DATA(h);
    for (int i = 0; i < DIGEST; i++) {
        if (hex[2 * i] != hexdigits[digest[i] >> 4] || hex[2 * i + 1] != hexdigits[digest[i] & 15]) {
            goto done;
        }
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
    *h_out = h;
    h = NULL;
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

static PyObject *verify_wire(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "verify_wire takes 7 arguments");
        return NULL;
    }
    PyObject *prev_obj = args[0], *lines = args[1];
    long long seq = PyLong_AsLongLong(args[2]);
    PyObject *loads = args[3], *dumps = args[4], *option = args[5], *errors = args[6];
    if (seq == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyBytes_Check(prev_obj) || PyBytes_GET_SIZE(prev_obj) != DIGEST || !PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "verify_wire takes 32 bytes of prev and a list of lines");
        return NULL;
    }
    unsigned char prev[DIGEST];
    memcpy(prev, PyBytes_AS_STRING(prev_obj), DIGEST);
    PyObject *hashes = PyList_New(0), *gaps = PyList_New(0), *last_type = NULL;
    if (hashes == NULL || gaps == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lines); i++) {
        if (i > 0) {
            if (seq == LLONG_MAX) {
                goto not_wire; /* seq 2**63 and on: left to the general path */
            }
            seq++;
        }
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "lines must be bytes");
            goto fail;
        }
        PyObject *h = NULL, *type = NULL;
        Py_INCREF(line); /* loads and dumps may run Python code that takes it out of `lines` */
        int ok = verify_line(line, prev, seq, loads, dumps, option, errors, &h, &type);
        Py_DECREF(line);
        if (ok < 0) {
            goto fail;
        }
        if (ok == 0) {
            goto not_wire;
        }
        int is_gap = 0;
        if (type != NULL) {
            is_gap = PyObject_RichCompareBool(type, str_gap, Py_EQ);
        }
        PyObject *seq_obj = is_gap == 1 ? PyLong_FromLongLong(seq) : NULL;
        int bad = is_gap < 0 || PyList_Append(hashes, h) < 0 ||
                  (is_gap == 1 && (seq_obj == NULL || PyList_Append(gaps, seq_obj) < 0));
        Py_XDECREF(seq_obj);
        Py_DECREF(h);
        Py_XDECREF(last_type);
        last_type = type;
        if (bad) {
            goto fail;
        }
    }
    int sealed = 0;
    if (last_type != NULL) {
        sealed = PyObject_RichCompareBool(last_type, str_seal, Py_EQ);
        if (sealed < 0) {
            goto fail;
        }
    }
    Py_XDECREF(last_type);
    return Py_BuildValue("(NNO)", hashes, gaps, sealed ? Py_True : Py_False);
not_wire:
    Py_DECREF(hashes);
    Py_DECREF(gaps);
    Py_XDECREF(last_type);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(hashes);
    Py_XDECREF(gaps);
    Py_XDECREF(last_type);
    return NULL;
}

static PyMethodDef methods[] = {
    {"link", (PyCFunction)(void (*)(void))chain_link, METH_FASTCALL, link_doc},
    {"crc32", py_crc32, METH_O, crc32_doc},
    {"parse_run", (PyCFunction)(void (*)(void))parse_run, METH_FASTCALL, parse_run_doc},
    {"verify_wire", (PyCFunction)(void (*)(void))verify_wire, METH_FASTCALL, verify_wire_doc},
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
