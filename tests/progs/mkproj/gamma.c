/* mkproj: one step of the value chain. */
#include "proj.h"

unsigned gamma_(unsigned x) {
    x ^= x >> 14;
    x *= 73244481u;
    return x ^ (x << 3);
}
