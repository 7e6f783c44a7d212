/* fbp_generic.h - compile the including file's kernels once per float type.
 *
 * A kernel file does:   #ifndef FBP_T / #define FBP_SELF "file.c" /
 *                       #include "fbp_generic.h" / #else <kernels> #endif
 * and writes its kernels once with T for the element type and FN(name) for the
 * suffixed name (name_f32, name_f64). One source per concern, two instantiations.
 * The math each T needs (fbp_math.h, all vectorizable):
 *   EXP_NONPOS_NONAN  exp(x) for x <= 0 or -inf, never NaN
 *   EXP_NONPOS        the same, NaN kept
 *   LOG1P_UNIT        log1p(e) for e in [0, 1]
 *   TANH, SIGMOID, SQRT
 */
#include "fbp_internal.h"
#include "fbp_math.h"
#include <math.h>

#define FBP_T 1
#define T float
#define FN(name) name##_f32
#define EXP_NONPOS_NONAN fbp_expf_nonpos_nonan
#define TANH fbp_tanh_f32
#define SIGMOID fbp_sigmoid_f32
#define SQRT sqrtf
#define EXP_NONPOS fbp_expf_nonpos
#define LOG1P_UNIT fbp_log1p_unit_f32
#include FBP_SELF
#include "fbp_generic_end.h"

#define T double
#define FN(name) name##_f64
#define EXP_NONPOS_NONAN fbp_exp_nonpos_nonan_f64
#define TANH fbp_tanh_f64
#define SIGMOID fbp_sigmoid_f64
#define SQRT sqrt
#define EXP_NONPOS fbp_exp_nonpos_f64
#define LOG1P_UNIT fbp_log1p_unit_f64
#include FBP_SELF
#include "fbp_generic_end.h"

#undef FBP_T
