/* Scans and writes of ASCII text shared by the C modules (agent/_speedups.c,
 * agent/transforms/_speedups.c). Included, not linked: each module keeps its own copy.
 *
 * The scans take 16 bytes at a time where SSE2 is (always on x86-64), bytewise elsewhere: a
 * signed byte compare below 0x20 takes the control characters and the bytes from 0x80 up. */
#ifndef TAILSEAL_TEXT_H
#define TAILSEAL_TEXT_H

#include <Python.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* How many of the n bytes at p, from the first, are printable ASCII (' ' to '~'), and with
 * `json`, also neither '"' nor '\\': bytes a JSON string holds as they are. The byte there (if
 * any) is the first that is not. */
static inline Py_ssize_t text_prefix(const unsigned char *p, Py_ssize_t n, int json) {
    Py_ssize_t k = 0;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20);
    const __m128i one = _mm_set1_epi8(json ? '"' : 0x7f), two = _mm_set1_epi8(json ? '\\' : 0x7f);
    for (; n - k >= 16; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + k));
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, one), _mm_cmpeq_epi8(v, two)),
                                    _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(stop);
        if (mask != 0) {
            return k + __builtin_ctz((unsigned)mask);
        }
    }
#endif
    for (; k < n; k++) {
        unsigned char c = p[k];
        int stop = c < 0x20 || c >= 0x80 || (json ? c == '"' || c == '\\' : c == 0x7f);
        if (stop) {
            break;
        }
    }
    return k;
}

/* The bytes a JSON string holds as they are, from p: see text_prefix. */
static inline Py_ssize_t plain_prefix(const unsigned char *p, Py_ssize_t n) {
    return text_prefix(p, n, 1);
}

/* Printable ASCII bytes from p: see text_prefix. */
static inline Py_ssize_t printable_prefix(const unsigned char *p, Py_ssize_t n) {
    return text_prefix(p, n, 0);
}

/* n bytes of src written at p; returns the place after them. */
static inline char *put_bytes(char *p, const void *src, Py_ssize_t n) {
    memcpy(p, src, (size_t)n);
    return p + n;
}

/* The digits of v, written at p; returns how many (at most 20). snprintf's "%llu" cost the
 * buffer writer about 2% of its CPU at three numbers per line. */
static inline int put_digits(char *p, unsigned long long v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (int i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

#endif
