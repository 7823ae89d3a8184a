/* nn_common.h - small helpers shared by the layer kernels. */
#ifndef KM_NN_COMMON_H
#define KM_NN_COMMON_H

#include <stdio.h>
#include <stdlib.h>

/* Below this many elements an OpenMP region costs more than it saves. */
#define KM_OMP_MIN 32768

/* Hyper-parameters arrive as float (0.9f != 0.9, 1e-5f != 1e-5) while PyTorch
 * computes with the Python double the user wrote. Recover it: the shortest
 * decimal that rounds to the same float. */
static inline double km_float_as_decimal(float x) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        double v = strtod(buf, NULL);
        if ((float)v == x) return v;
    }
    return (double)x;
}

#endif
