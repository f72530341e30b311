/* mkproj: one step of the value chain. */
#include "proj.h"

unsigned beta(unsigned x) {
    x ^= x >> 13;
    x *= 73244479u;
    return x ^ (x << 2);
}
