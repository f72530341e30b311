/* mkproj: one step of the value chain. */
#include "proj.h"

unsigned delta(unsigned x) {
    x ^= x >> 15;
    x *= 73244483u;
    return x ^ (x << 4);
}
