/* libFuzzer target: token-id unpacking. Bytes 0-2 pick V (1..2^24), bytes 3-4 the token count; the rest is the
 * packed message. Accepted input must re-pack to the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qsv_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    uint32_t V = 1u + ((uint32_t)data[0] << 16 | (uint32_t)data[1] << 8 | data[2]);
    if (V > (1u << 24)) V = 1u << 24;
    size_t count = (size_t)data[3] << 8 | data[4];
    const uint8_t *msg = data + 5;
    size_t len = size - 5;
    uint32_t *ids = malloc((count ? count : 1) * sizeof(uint32_t));
    if (!ids) abort();
    int rc = qsv_codec_unpack_tokens(msg, len, count, V, ids);
    if (rc == QSV_OK) {
        size_t bytes = qsv_codec_token_bytes(V, count);
        if (bytes != len) abort();
        uint8_t *again = malloc(bytes ? bytes : 1);
        if (!again) abort();
        for (size_t i = 0; i < count; ++i) {
            if (ids[i] >= V) abort();
        }
        if (qsv_codec_pack_tokens(ids, count, V, again, bytes) != QSV_OK) abort();
        if (bytes && memcmp(again, msg, bytes) != 0) abort();
        free(again);
    } else if (rc != QSV_ERR_TRUNCATED && rc != QSV_ERR_TRAILING && rc != QSV_ERR_RANGE) {
        abort();
    }
    free(ids);
    return 0;
}
