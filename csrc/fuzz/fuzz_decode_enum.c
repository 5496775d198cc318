/* libFuzzer target: the enumerative payload decoder (flag bit forced to 0). Bytes 0-4 pick V and ell. */
#include "fuzz_codec_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    fuzz_ctx c;
    fuzz_ctx_init(&c, data, 300);
    size_t len = size - 5;
    uint8_t *msg = malloc(len ? len : 1);
    FUZZ_REQUIRE(msg);
    if (len) memcpy(msg, data + 5, len);
    if (len) msg[0] &= 0x7F; /* enumerative */
    fuzz_check_message(&c, msg, len);
    free(msg);
    fuzz_ctx_free(&c);
    return 0;
}
