/* mkproj: one step of the value chain. */
#include "proj.h"

unsigned alpha(unsigned x) {
    x ^= x >> 12;
    x *= 73244477u;
    return x ^ (x << 1);
}
