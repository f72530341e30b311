/* mkproj: one step of the value chain. */
#include "proj.h"

unsigned epsilon(unsigned x) {
    x ^= x >> 16;
    x *= 73244485u;
    return x ^ (x << 5);
}
