/* Symbol visibility for libfidbus: the library is built with
 * -fvisibility=hidden and exports only what its headers mark FIDBUS_API. */
#ifndef FIDBUS_EXPORT_H
#define FIDBUS_EXPORT_H
#define FIDBUS_API __attribute__((visibility("default")))
#endif
