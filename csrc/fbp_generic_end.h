/* fbp_generic_end.h - fbp_generic.h's element-type names, undone after each
 * instantiation. */
#undef T
#undef FN
#undef EXP_NONPOS_NONAN
#undef TANH
#undef SIGMOID
#undef SQRT
#undef EXP_NONPOS
#undef LOG1P_UNIT
