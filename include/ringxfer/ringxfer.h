// Umbrella header of ringxfer's public C++ API. Includes only std and the other public
// headers; nothing from liburing or src/.
#pragma once

#include "ringxfer/version.h"
