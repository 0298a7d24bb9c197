/*
 * utf8.c - UTF-8 validation as MQTT requires it (3.1.1 and 5.0 §1.5.4).
 *
 * Accepted: well-formed UTF-8 (RFC 3629) of code points U+0001..U+10FFFF.
 * Refused:  U+0000; surrogates U+D800..U+DFFF (ED A0..BF xx); overlong forms
 *           (C0, C1, E0 80..9F xx, F0 80..8F xx xx); code points above
 *           U+10FFFF (F4 90.. and F5..FF); stray continuation bytes; sequences
 *           cut short. Control characters and non-characters (U+FFFF) are
 *           allowed: the spec lets a receiver refuse them but does not oblige.
 *
 * sl_utf8_valid() is the same check with U+0000 allowed (RFC 3629 as it
 * is, for the WebSocket close reason).
 *
 * Topic names are nearly always ASCII, so 8 bytes are checked at a time
 * until the first non-ASCII byte. mqtt_topic_name_scan() looks for the
 * wildcard characters '+' and '#' in the same pass.
 */
#include <string.h>

#include "codec.h"

#define HIGH_BITS 0x8080808080808080ull
#define LOW_BITS 0x0101010101010101ull

/* True if one of the 8 bytes of w is zero. */
static inline bool has_zero(uint64_t w)
{
    return ((w - LOW_BITS) & ~w & HIGH_BITS) != 0;
}

/* Length of the sequence led by c (2..4), or 0 if c cannot lead one. */
static inline int seq_len(uint8_t c)
{
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* Allowed range of the byte after lead c (excludes overlongs, surrogates and
 * code points above U+10FFFF). */
static inline bool second_ok(uint8_t c, uint8_t b)
{
    switch (c) {
    case 0xe0:
        return b >= 0xa0 && b <= 0xbf;
    case 0xed:
        return b >= 0x80 && b <= 0x9f;
    case 0xf0:
        return b >= 0x90 && b <= 0xbf;
    case 0xf4:
        return b >= 0x80 && b <= 0x8f;
    default:
        return (b & 0xc0) == 0x80;
    }
}

/* One multi-byte sequence at s[0..left): its length, or 0 if invalid. */
static inline size_t multibyte(const uint8_t *s, size_t left)
{
    uint8_t c = s[0];
    int n = seq_len(c);

    if (n == 0 || left < (size_t)n || !second_ok(c, s[1]))
        return 0;
    for (int k = 2; k < n; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return (size_t)n;
}

/* Is the next 8-byte word at s all ASCII and free of NUL? Notes wildcard
 * characters when asked to. */
static inline bool ascii_word(const uint8_t *s, bool find_wild, bool *wild,
                              bool allow_nul)
{
    uint64_t w;

    memcpy(&w, s, 8);
    if ((w & HIGH_BITS) || (!allow_nul && has_zero(w)))
        return false;
    if (find_wild &&
        (has_zero(w ^ ('+' * LOW_BITS)) || has_zero(w ^ ('#' * LOW_BITS))))
        *wild = true;
    return true;
}

/*
 * The validator, specialised at compile time by find_wild. ASCII goes 8
 * bytes at a time; the last 8 bytes are checked as one (overlapping) word
 * too. A word that fails the fast test is re-read byte by byte.
 */
static inline bool scan(const uint8_t *s, size_t len, bool find_wild,
                        bool *wild, bool allow_nul)
{
    size_t i = 0;

    while (i < len) {
        if (len - i >= 8) {
            if (ascii_word(s + i, find_wild, wild, allow_nul)) {
                i += 8;
                continue;
            }
        } else if (len >= 8 &&
                   ascii_word(s + len - 8, find_wild, wild, allow_nul)) {
            return true;
        }
        uint8_t c = s[i];
        if (c == 0 && !allow_nul)
            return false;
        if (c < 0x80) {
            if (find_wild && (c == '+' || c == '#'))
                *wild = true;
            i++;
            continue;
        }
        size_t n = multibyte(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
    return scan(s, len, false, NULL, false);
}

bool sl_utf8_valid(const uint8_t *s, size_t len)
{
    return scan(s, len, false, NULL, true);
}

int mqtt_topic_name_scan(const uint8_t *s, size_t len)
{
    bool wild = false;

    if (!scan(s, len, true, &wild, false))
        return SL_EUTF8;
    return wild ? SL_ETOPIC : SL_OK;
}
