/* fbp_generic.h - compile the including file's kernels once per float type.
 *
 * A kernel file does:   #ifndef FBP_T / #define FBP_SELF "file.c" /
 *                       #include "fbp_generic.h" / #else <kernels> #endif
 * and writes its kernels once with T for the element type and FN(name) for the
 * suffixed name (name_f32, name_f64). One source per concern, two instantiations.
 */
#include "fbp_internal.h"
#include "fbp_math.h"
#include <math.h>

#define T float
#define FBP_T 1
#define FN(name) name##_f32
#define EXP expf
#define EXP_NONPOS_NONAN fbp_expf_nonpos_nonan /* x <= 0 or -inf, no NaN; vectorizable */
#define LOG logf
#define TANH fbp_tanh_f32 /* vectorizable; libm tanhf is a scalar call */
#define SQRT sqrtf
#define FABS fabsf
#define SIGMOID fbp_sigmoid_f32
#include FBP_SELF
#undef T
#undef FN
#undef EXP
#undef EXP_NONPOS_NONAN
#undef LOG
#undef TANH
#undef SQRT
#undef FABS
#undef SIGMOID

#define T double
#define FN(name) name##_f64
#define EXP exp
#define EXP_NONPOS_NONAN fbp_exp_nonpos_nonan_f64
#define LOG log
#define TANH fbp_tanh_f64
#define SQRT sqrt
#define FABS fabs
#define SIGMOID fbp_sigmoid_f64
#include FBP_SELF
#undef T
#undef FN
#undef EXP
#undef EXP_NONPOS_NONAN
#undef LOG
#undef TANH
#undef SQRT
#undef FABS
#undef SIGMOID
#undef FBP_T
