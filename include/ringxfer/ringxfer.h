// Umbrella header of ringxfer's public C++ API. Includes only std and the other public
// headers; nothing from liburing or src/.
#pragma once

#include "ringxfer/config.h"
#include "ringxfer/descriptors.h"
#include "ringxfer/engine.h"
#include "ringxfer/status.h"
#include "ringxfer/version.h"
