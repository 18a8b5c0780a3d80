;;; ob-chat-ai.el --- Chat-completion models in Org Babel blocks  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; Author: The ob-chat-ai authors
;; URL: https://github.com/ob-chat-ai/ob-chat-ai
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: outlines, tools, comm

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; Org Babel support for talking to chat-completion models (OpenAI and
;; any OpenAI-compatible server) from `chat-ai' source blocks:
;;
;;   #+begin_src chat-ai :model gpt-4o-mini :system "You are a helpful assistant."
;;   Server-Sent Eventについて教えて
;;   #+end_src
;;
;; C-c C-c sends the body as the user message and puts the reply under
;; #+RESULTS:.  Header arguments map to the API's request fields; the
;; request is built here as one JSON object and handed on standard input
;; to the Python helper (see ob-chat-ai-process.el), which talks HTTP.
;;
;; To enable it:
;;
;;   (org-babel-do-load-languages 'org-babel-load-languages
;;                                '((chat-ai . t)))

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org-src)
(require 'auth-source)
(require 'url-parse)
(require 'ob-chat-ai-process)

;;;; Customization

(defcustom ob-chat-ai-base-url "https://api.openai.com/v1"
  "The API base URL used when neither :base-url nor $OPENAI_BASE_URL is set.
Requests go to this URL followed by /chat/completions."
  :type 'string
  :group 'ob-chat-ai)

;;;; Header args

(defvar org-babel-default-header-args:chat-ai
  '((:model . "gpt-4o-mini")
    (:stream . "yes"))
  "Default header arguments for chat-ai source blocks.")

(defconst ob-chat-ai--request-fields
  '((:model model string)
    (:temperature temperature number)
    (:top-p top_p number)
    (:n n number)
    (:stream stream boolean)
    (:stop stop strings)
    (:max-tokens max_tokens number)
    (:max-completion-tokens max_completion_tokens number)
    (:presence-penalty presence_penalty number)
    (:frequency-penalty frequency_penalty number)
    (:logit-bias logit_bias json)
    (:user user string)
    (:seed seed number)
    (:response-format response_format json-or-string)
    (:reasoning-effort reasoning_effort string)
    (:store store boolean)
    (:metadata metadata json))
  "Header args that are request fields: (HEADER-ARG FIELD KIND).
KIND says how the header value becomes a JSON value: `string',
`number', `boolean', `strings' (one string or a list), `json' (a
JSON object) or `json-or-string'.")

(defconst ob-chat-ai--other-header-args
  '((:system . :any)
    (:role-system . ("system" "developer"))
    (:params . :any)
    (:base-url . :any)
    (:api-key . :any)
    (:timeout . :any))
  "Header args that shape the request without being a field of their own.")

(defvar org-babel-header-args:chat-ai
  (append
   (mapcar (lambda (spec)
             (cons (intern (substring (symbol-name (car spec)) 1))
                   (if (eq (nth 2 spec) 'boolean) '((yes no)) :any)))
           ob-chat-ai--request-fields)
   (mapcar (lambda (spec)
             (cons (intern (substring (symbol-name (car spec)) 1))
                   (if (listp (cdr spec)) (list (cdr spec)) (cdr spec))))
           ob-chat-ai--other-header-args))
  "Header arguments specific to chat-ai source blocks, for completion.")

(defconst ob-chat-ai--babel-internal-params
  '(:result-params :result-type :colname-names :rowname-names)
  "Params that Babel itself adds to every block's header args.")

(defconst ob-chat-ai--envelope-params
  '((base_url . :base-url) (api_key . :api-key) (timeout . :timeout))
  "Request envelope fields and the header args that set them.")

;;;; Functions

(defun ob-chat-ai--user-error (format &rest args)
  "Signal a `user-error' with FORMAT and ARGS, saying it comes from chat-ai."
  (user-error "chat-ai: %s" (apply #'format-message format args)))

;;;###autoload
(defun org-babel-execute:chat-ai (body params)
  "Execute a chat-ai BODY according to PARAMS and return the model's reply."
  (ob-chat-ai--check-header-args params)
  (let* ((envelope (ob-chat-ai--envelope body params))
         (pieces nil)
         (request (ob-chat-ai-process-send
                   envelope
                   :on-delta (lambda (event)
                               (push (cons (alist-get 'choice event)
                                           (alist-get 'text event))
                                     pieces)))))
    (unless noninteractive
      (message "chat-ai: waiting for %s..." (alist-get 'model (alist-get 'body envelope))))
    (let ((final (ob-chat-ai-process-wait request)))
      (ob-chat-ai--reply-text (ob-chat-ai--choice-texts (reverse pieces))
                              final))))

(defun ob-chat-ai--check-header-args (params)
  "Signal a `user-error' naming any header arg in PARAMS that nobody knows."
  (let ((known (append (mapcar #'car ob-chat-ai--request-fields)
                       (mapcar #'car ob-chat-ai--other-header-args)
                       ob-chat-ai--babel-internal-params
                       (mapcar (lambda (spec) (intern (format ":%s" (car spec))))
                               org-babel-common-header-args-w-values))))
    (dolist (param params)
      (let ((name (car param)))
        (unless (memq name known)
          (let ((guess (seq-find (lambda (candidate)
                                   (<= (string-distance (symbol-name candidate)
                                                        (symbol-name name))
                                       2))
                                 known)))
            (ob-chat-ai--user-error "Unknown header argument %s%s" name
                        (if guess (format " (did you mean %s?)" guess) ""))))))))

(defun ob-chat-ai--envelope (body params)
  "Return the request for BODY and PARAMS, as an alist ready for the helper."
  (when (string-empty-p (string-trim body))
    (ob-chat-ai--user-error "The block is empty; write the prompt between \
#+begin_src and #+end_src"))
  (let* ((base-url (or (ob-chat-ai--param params :base-url)
                       (getenv "OPENAI_BASE_URL")
                       ob-chat-ai-base-url))
         (key (ob-chat-ai--api-key params base-url))
         (timeout (ob-chat-ai--param params :timeout)))
    (when (and timeout (not (numberp timeout)))
      (ob-chat-ai--user-error ":timeout must be a number of seconds, not %S" timeout))
    `((base_url . ,base-url)
      ,@(and key `((api_key . ,key)))
      ,@(and timeout `((timeout . ,timeout)))
      (body . ,(ob-chat-ai--body body params)))))

(defun ob-chat-ai--param (params name)
  "Return the value of header arg NAME in PARAMS, nil when empty."
  (let ((value (cdr (assq name params))))
    (unless (member value '(nil ""))
      value)))

(defun ob-chat-ai--body (body params)
  "Return the chat-completions request body for BODY and PARAMS."
  (let ((fields nil))
    (dolist (spec ob-chat-ai--request-fields)
      (let ((value (ob-chat-ai--param params (car spec))))
        (when value
          (push (cons (nth 1 spec)
                      (ob-chat-ai--json-value (car spec) (nth 2 spec) value))
                fields))))
    (push (cons 'messages (ob-chat-ai--messages body params)) fields)
    (let ((listed (nreverse fields)))
      (append listed
              (seq-remove (lambda (field) (assq (car field) listed))
                          (ob-chat-ai--params-object params))))))

(defun ob-chat-ai--messages (body params)
  "Return the messages for BODY, after the system message from PARAMS."
  (let ((system (ob-chat-ai--param params :system))
        (role (format "%s" (or (ob-chat-ai--param params :role-system) "system"))))
    (unless (member role '("system" "developer"))
      (ob-chat-ai--user-error ":role-system must be system or developer, not %s" role))
    (vconcat
     (and system `(((role . ,role) (content . ,(format "%s" system)))))
     `(((role . "user") (content . ,body))))))

(defun ob-chat-ai--json-value (name kind value)
  "Return header arg NAME's VALUE as the JSON value of its KIND.
A value that cannot be converted is passed on as it is, for the
helper to refuse with a message naming the field."
  (pcase kind
    ('string (if (stringp value) value (format "%s" value)))
    ('number (if (and (stringp value)
                      (string-match-p
                       "\\`[-+]?\\([0-9]+\\.?[0-9]*\\|\\.[0-9]+\\)\\([eE][-+]?[0-9]+\\)?\\'"
                       value))
                 (string-to-number value)
               (ob-chat-ai--json-scalar value)))
    ('boolean (pcase (downcase (format "%s" value))
                ((or "yes" "t" "true" "on") t)
                ((or "no" "nil" "false" "off") :false)
                (_ (ob-chat-ai--json-scalar value))))
    ('strings (if (or (consp value) (vectorp value))
                  (vconcat (mapcar #'ob-chat-ai--list-item value))
                (format "%s" value)))
    ('json (if (stringp value)
               (ob-chat-ai--parse-json name value)
             (ob-chat-ai--json-scalar value)))
    ('json-or-string (if (and (stringp value) (string-prefix-p "{" value))
                         (ob-chat-ai--parse-json name value)
                       (format "%s" value)))))

(defun ob-chat-ai--list-item (item)
  "Return ITEM of a header arg list as a string.
Org reads [\"a\", \"b\"] as Lisp, so a JSON-style comma turns
the item after it into (\, ITEM)."
  (format "%s" (if (eq (car-safe item) '\,) (cadr item) item)))

(defun ob-chat-ai--json-scalar (value)
  "Return VALUE if JSON can hold it as it is, else its printed form."
  (if (or (numberp value) (stringp value)) value (format "%s" value)))

(defun ob-chat-ai--parse-json (name text)
  "Return the JSON value in TEXT, the value of header arg NAME."
  (condition-case err
      (json-parse-string text :object-type 'alist)
    (json-error
     (ob-chat-ai--user-error "%s is not valid JSON (%s): %s"
                 name (error-message-string err) text))))

(defun ob-chat-ai--params-object (params)
  "Return the extra request fields of the :params header arg in PARAMS.
Its value is a JSON object, or the name of a block whose body is one."
  (let ((value (ob-chat-ai--param params :params)))
    (when value
      (let* ((text (format "%s" value))
             (object (ob-chat-ai--parse-json
                      :params
                      (if (string-prefix-p "{" (string-trim-left text))
                          text
                        (ob-chat-ai--named-block-body text :params)))))
        (unless (and (listp object) (consp (car-safe object)))
          (ob-chat-ai--user-error ":params must be a JSON object, not %s" text))
        object))))

(defun ob-chat-ai--named-block-body (name header-arg)
  "Return the body of the block named NAME, referred to by HEADER-ARG."
  (let ((position (org-babel-find-named-block name)))
    (unless position
      (ob-chat-ai--user-error "%s refers to %s, but no block has #+name: %s"
                  header-arg name name))
    (save-excursion
      (goto-char position)
      (string-trim (nth 1 (org-babel-get-src-block-info 'no-eval))))))

(defun ob-chat-ai--api-key (params base-url)
  "Return the API key for BASE-URL: from PARAMS, auth-source or the environment.
A <<NAME>> :api-key names a block whose body is the key.  Return nil
for a server on loopback when no key is found, and signal a
`user-error' saying where it looked otherwise."
  (let* ((host (url-host (url-generic-parse-url base-url)))
         (given (ob-chat-ai--param params :api-key))
         (key (cond
               ((and (stringp given)
                     (string-match "\\`<<\\([^<>()]+\\)\\(()\\)?>>\\'" given))
                (let ((name (match-string 1 given)))
                  (or (ob-chat-ai--nonempty
                       (ob-chat-ai--named-block-body name :api-key))
                      (ob-chat-ai--user-error ":api-key refers to block %s, \
which is empty" name))))
               (given (format "%s" given))
               ((ob-chat-ai--auth-source-key host))
               ((ob-chat-ai--nonempty (getenv "OPENAI_API_KEY"))))))
    (when (and key (string-match-p "[\n\r]" key))
      (ob-chat-ai--user-error "The API key has a line break in it"))
    (if (or key (ob-chat-ai--loopback-p host))
        key
      (ob-chat-ai--user-error "No API key for %s; looked in :api-key, auth-source \
(machine %s in %s) and $OPENAI_API_KEY"
                  host host
                  (mapconcat #'identity (seq-filter #'stringp auth-sources) ", ")))))

(defun ob-chat-ai--auth-source-key (host)
  "Return the secret that auth-source has for HOST, or nil."
  (when host
    (let* ((found (car (auth-source-search :host host :max 1 :require '(:secret))))
           (secret (plist-get found :secret)))
      (ob-chat-ai--nonempty (if (functionp secret) (funcall secret) secret)))))

(defun ob-chat-ai--nonempty (text)
  "Return TEXT trimmed, or nil when it is nil or blank."
  (and text (not (string-empty-p (string-trim text))) (string-trim text)))

(defun ob-chat-ai--loopback-p (host)
  "Return non-nil when HOST is this machine."
  (and host
       (or (member host '("localhost" "::1" "[::1]"))
           (string-prefix-p "127." host))))

(defun ob-chat-ai--choice-texts (pieces)
  "Return the reply text of each choice, in order, from delta PIECES.
PIECES is a list of (CHOICE . TEXT) in arrival order."
  (let ((count (1+ (apply #'max -1 (mapcar #'car pieces)))))
    (mapcar (lambda (choice)
              (mapconcat #'cdr (seq-filter (lambda (piece) (eql (car piece) choice))
                                           pieces)
                         ""))
            (number-sequence 0 (1- count)))))

(defun ob-chat-ai--reply-text (texts final)
  "Return the text to show for choice TEXTS and the FINAL event.
An invalid request signals a `user-error'; any other error becomes
one line after whatever text had arrived, and is also shown in the
echo area."
  (let ((reply (ob-chat-ai--join-choices texts)))
    (pcase (alist-get 'type final)
      ("done"
       (let ((early (seq-filter (lambda (reason)
                                  (member reason '("length" "content_filter")))
                                (alist-get 'finish_reasons final))))
         (if early
             (concat reply "\n\n"
                     (format "[chat-ai: the reply stopped early: finish_reason %s]"
                             (car early)))
           reply)))
      (_
       (if (equal (alist-get 'kind final) "invalid")
           (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final))
         (let ((line (concat "chat-ai error: " (alist-get 'message final))))
           (message "%s" line)
           (if (string-empty-p reply) line (concat reply "\n\n" line))))))))

(defun ob-chat-ai--join-choices (texts)
  "Return the choice TEXTS as one text, each choice after the first labelled."
  (let ((number 0))
    (mapconcat (lambda (text)
                 (setq number (1+ number))
                 (if (= number 1) text (format "\n\n[choice %d]\n%s" number text)))
               texts
               "")))

(defun ob-chat-ai--invalid-message (event)
  "Return the message of invalid-request EVENT, naming the header arg."
  (let* ((message (alist-get 'message event))
         (param (alist-get 'param event))
         (field (and param (intern param)))
         (header-arg (or (car (seq-find (lambda (spec) (eq (nth 1 spec) field))
                                        ob-chat-ai--request-fields))
                         (alist-get field ob-chat-ai--envelope-params))))
    (if (and header-arg (string-prefix-p param message))
        (concat (symbol-name header-arg) (substring message (length param)))
      message)))

(add-to-list 'org-src-lang-modes '("chat-ai" . text))

(provide 'ob-chat-ai)

;;; ob-chat-ai.el ends here
