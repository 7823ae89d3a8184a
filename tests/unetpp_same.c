/* unetpp_same.c - see unetpp_same.h. */
#include "unetpp_same.h"

#include "test.h"

#include <string.h>

void km_test_unetpp_same(km_unetpp *a, km_unetpp *b) {
    int D = km_unetpp_encoder_depth(a);
    CHECK(km_unetpp_encoder_depth(b) == D && km_unetpp_resnet_depth(b) == km_unetpp_resnet_depth(a));
    CHECK(!memcmp(km_unetpp_decoder_channels(b), km_unetpp_decoder_channels(a), sizeof(int) * (size_t)D));
    CHECK(km_unetpp_num_params(b) == km_unetpp_num_params(a));
    if (km_unetpp_num_params(b) != km_unetpp_num_params(a)) return;
    CHECK(!memcmp(km_unetpp_params(b), km_unetpp_params(a), 4 * km_unetpp_num_params(a)));
    for (int i = 0; i < km_unetpp_num_entries(a); i++) { /* running statistics */
        const km_unetpp_entry *e = km_unetpp_entry_at(a, i);
        if (e->kind == KM_UNETPP_BUFFER)
            CHECK_MSG(!memcmp(km_unetpp_buffers(b) + e->offset, km_unetpp_buffers(a) + e->offset, 4 * e->numel),
                      "%s differs after the round trip", e->name);
    }
}
