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
(require 'json)
(require 'url-parse)
(require 'org-element)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-messages)
(require 'ob-chat-ai-convert)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-async)
(require 'ob-chat-ai-files)
(require 'ob-chat-ai-images)

;;;; Customization

(defcustom ob-chat-ai-provider "openai"
  "The provider of blocks that have no :provider header arg.
The helper knows the providers: openai, azure, local and those of
the user's providers.json; \\[ob-chat-ai-providers] lists them."
  :type 'string
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-model nil
  "The model of blocks that name none, or nil to leave it to the helper.
The helper takes $CHAT_AI_MODEL, else the provider's model, else
gpt-4o-mini."
  :type '(choice (const :tag "The helper's choice" nil) string)
  :group 'ob-chat-ai)

;;;; Header args

(defvar org-babel-default-header-args:chat-ai
  '((:stream . "yes")
    (:colnames . "no")
    (:hlines . "yes"))
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
    (:metadata metadata json)
    (:suffix suffix string)
    (:echo echo boolean)
    (:best-of best_of number)
    (:logprobs logprobs number)
    (:size size string)
    (:quality quality string)
    (:style style string)
    (:background background string)
    (:output-format output_format string))
  "Header args that are request fields: (HEADER-ARG FIELD KIND).
KIND says how the header value becomes a JSON value: `string',
`number', `boolean', `strings' (one string or a list), `json' (a
JSON object) or `json-or-string'.")

(defconst ob-chat-ai--other-header-args
  '((:system . :any)
    (:role-system . ("system" "developer"))
    (:params . :any)
    (:provider . :any)
    (:base-url . :any)
    (:api-version . :any)
    (:headers . :any)
    (:api-key . :any)
    (:timeout . :any)
    (:max-retries . :any)
    (:dry-run . ("yes" "no"))
    (:format . ("markdown" "org"))
    (:usage . ("yes" "no"))
    (:async . ("yes" "no"))
    (:image . :any)
    (:detail . ("auto" "low" "high"))
    (:endpoint . ("chat" "completions" "images"))
    (:mask . :any))
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

;;;; Functions

;;;###autoload
(defun org-babel-execute:chat-ai (body params)
  "Execute a chat-ai BODY according to PARAMS and return the model's reply.
When the block runs asynchronously, return a placeholder at once;
the reply replaces it when it has come."
  (if ob-chat-ai--finished-reply
      (prog1 ob-chat-ai--finished-reply
        (setq ob-chat-ai--finished-reply nil))
    (ob-chat-ai--check-header-args params)
    (if (ob-chat-ai--yes-p params :dry-run)
        (ob-chat-ai--preview body params)
      (let ((envelope (ob-chat-ai--envelope body params)))
        (if (ob-chat-ai--async-p params)
            (ob-chat-ai--start-job envelope body params)
          (ob-chat-ai--run-sync envelope params))))))

(defun org-babel-expand-body:chat-ai (body params)
  "Return the prompt that BODY and PARAMS send: BODY, its $variables filled in.
This is what \\[org-babel-expand-src-block] shows, what tangling
writes and what :cache hashes, so it is computed here, at once,
without the helper.  :dry-run yes shows the whole request instead."
  (ob-chat-ai-messages-substitute body (org-babel--get-vars params)))

(defun ob-chat-ai--preview (body params)
  "Return the request that BODY and PARAMS would send, as JSON, keys masked.
The helper builds it as it would send it; nothing is sent."
  (let ((final (ob-chat-ai-process-wait
                (ob-chat-ai-process-send
                 (cons '(dry_run . t) (ob-chat-ai--envelope body params))))))
    (pcase (alist-get 'type final)
      ("preview" (alist-get 'text final))
      (_ (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final))))))

(defun ob-chat-ai--run-sync (envelope params)
  "Send ENVELOPE, wait for the whole reply and return its text, as PARAMS ask."
  (let* ((pieces nil)
         (request (ob-chat-ai-process-send
                   envelope
                   :on-delta (lambda (event) (push event pieces))
                   :on-retry #'ob-chat-ai--report-retry)))
    (unless noninteractive
      (message "%s" (ob-chat-ai-reply-placeholder (ob-chat-ai--model envelope))))
    (let ((final (ob-chat-ai-process-wait request)))
      (when (equal (alist-get 'kind final) "invalid")
        (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final)))
      (ob-chat-ai--reply-text (ob-chat-ai--choice-texts pieces) final params
                              (ob-chat-ai--heading-level)))))

(defun ob-chat-ai--model (envelope)
  "Return the model that ENVELOPE asks, as named in it or as the helper chooses."
  (or (alist-get 'model (alist-get 'body envelope))
      (alist-get 'model (ob-chat-ai--provider-entry (alist-get 'provider envelope)))
      "the model"))

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
  "Return the request for BODY and PARAMS, as an alist ready for the helper.
It holds what the block states; the helper decides where it goes and
which key it carries (see `ob-chat-ai--api-key')."
  (when (string-empty-p (string-trim body))
    (ob-chat-ai--user-error "The block is empty; write the prompt between \
#+begin_src and #+end_src"))
  (let* ((provider (ob-chat-ai--provider params))
         (base-url (ob-chat-ai--param params :base-url))
         (base-url (and base-url (format "%s" base-url)))
         (headers (ob-chat-ai--headers (ob-chat-ai--param params :headers)))
         (api-version (ob-chat-ai--param params :api-version))
         (timeout (ob-chat-ai--param params :timeout))
         (retries (ob-chat-ai--param params :max-retries)))
    `((provider . ,provider)
      ,@(and base-url `((base_url . ,base-url)))
      ,@(ob-chat-ai--api-key params (or base-url (ob-chat-ai--provider-url provider)))
      ,@(and headers `((headers . ,headers)))
      ,@(and api-version `((api_version . ,(format "%s" api-version))))
      ,@(and timeout `((timeout . ,timeout)))
      ,@(and retries `((max_retries . ,retries)))
      ,@(and (ob-chat-ai--param params :endpoint)
             `((endpoint . ,(ob-chat-ai--endpoint params))))
      ,@(and (ob-chat-ai-images-p params) (ob-chat-ai-images-output body params))
      (body . ,(ob-chat-ai--body
                body
                (if (or (ob-chat-ai--param params :model) (null ob-chat-ai-model))
                    params
                  (cons (cons :model ob-chat-ai-model) params)))))))

(defun ob-chat-ai--headers (value)
  "Return the HTTP headers that :headers VALUE gives, as an alist, or nil.
VALUE is one \"Name: value\" string, a list or vector of them, or a
JSON object."
  (cond
   ((null value) nil)
   ((and (stringp value) (string-prefix-p "{" (string-trim-left value)))
    (let ((object (ob-chat-ai--parse-json :headers value)))
      (unless (and (consp object) (seq-every-p (lambda (h) (stringp (cdr h))) object))
        (ob-chat-ai--user-error ":headers is not a JSON object of strings: %s" value))
      object))
   (t
    (mapcar (lambda (header)
              (let ((text (format "%s" header)))
                (unless (string-match "\\`\\([^:\n]+\\):[ \t]*\\([^\n]*\\)\\'" text)
                  (ob-chat-ai--user-error ":headers takes \"Name: value\", not %S" text))
                (cons (intern (string-trim (match-string 1 text)))
                      (string-trim (match-string 2 text)))))
            (if (stringp value) (list value) (append value nil))))))

(defun ob-chat-ai--provider (params)
  "Return the name of the provider that PARAMS choose."
  (format "%s" (or (ob-chat-ai--param params :provider) ob-chat-ai-provider)))

(defvar ob-chat-ai--provider-cache nil
  "What the helper last listed: a plist of :setup, :file, :time and :providers.")

;;;###autoload
(defun ob-chat-ai-providers (&optional interactive)
  "Return the providers the helper knows, each an alist with symbol keys.
Each has its name, api, base_url, model and key_variable.  The helper
is asked once for each set-up of it, and again when the providers
file changes.  INTERACTIVE, as when called with \\[execute-extended-command],
shows their names."
  (interactive "p")
  (let* ((cache ob-chat-ai--provider-cache)
         (providers
          (if (and cache
                   (equal (plist-get cache :setup) (ob-chat-ai--helper-setup))
                   (equal (plist-get cache :time)
                          (ob-chat-ai--file-time (plist-get cache :file))))
              (plist-get cache :providers)
            (ob-chat-ai--fetch-providers))))
    (when interactive
      (if providers
          (message "chat-ai providers: %s"
                   (mapconcat (lambda (entry) (alist-get 'name entry)) providers ", "))
        (message "chat-ai: the helper could not list its providers")))
    providers))

(defun ob-chat-ai--fetch-providers ()
  "Ask the helper for its providers, remember them, and return them.
Their names become the values that Babel offers for :provider.  When
the helper cannot list them, return nil: the request that follows
reports the same problem."
  (let* ((setup (ob-chat-ai--helper-setup))
         (final (ob-chat-ai-process-wait
                 (ob-chat-ai-process-send '((type . "providers")))))
         (providers (alist-get 'providers final)))
    (when (equal (alist-get 'type final) "providers")
      (ob-chat-ai--remember-providers setup (alist-get 'file final) providers))))

(defun ob-chat-ai--remember-providers (setup file providers)
  "Remember PROVIDERS, listed by a helper of SETUP reading FILE, and return them."
  (setq ob-chat-ai--provider-cache
        (list :setup setup
              :file file
              :time (ob-chat-ai--file-time file)
              :providers providers))
  (setf (alist-get 'provider org-babel-header-args:chat-ai)
        (list (mapcar (lambda (entry) (intern (alist-get 'name entry))) providers)))
  providers)

(defun ob-chat-ai--file-time (file)
  "Return the modification time of FILE, or nil when there is no such file."
  (and file (file-attribute-modification-time (file-attributes file))))

(defun ob-chat-ai--provider-entry (name)
  "Return the helper's description of the provider called NAME, or nil."
  (seq-find (lambda (entry) (equal (alist-get 'name entry) name))
            (ob-chat-ai-providers)))

(defun ob-chat-ai--provider-url (name)
  "Return the base URL of the provider called NAME, as the helper knows it."
  (alist-get 'base_url (ob-chat-ai--provider-entry name)))

(defun ob-chat-ai--body (body params)
  "Return the chat-completions request body for BODY and PARAMS."
  (let ((fields nil))
    (dolist (spec ob-chat-ai--request-fields)
      (let ((value (ob-chat-ai--param params (car spec))))
        (when value
          (push (cons (nth 1 spec)
                      (ob-chat-ai--json-value (car spec) (nth 2 spec) value))
                fields))))
    (setq fields (append (reverse (ob-chat-ai--input body params)) fields))
    (when (and (ob-chat-ai--yes-p params :usage) (eq (alist-get 'stream fields) t))
      (push '(stream_options (include_usage . t)) fields))
    (let ((listed (nreverse fields)))
      (append listed
              (seq-remove (lambda (field) (assq (car field) listed))
                          (ob-chat-ai--params-object params))))))

(defun ob-chat-ai--endpoint (params)
  "Return the :endpoint of PARAMS, checked: chat, completions or images."
  (let ((endpoint (format "%s" (or (ob-chat-ai--param params :endpoint) "chat"))))
    (unless (member endpoint '("chat" "completions" "images"))
      (ob-chat-ai--user-error ":endpoint must be chat, completions or images, not %s"
                              endpoint))
    endpoint))

(defun ob-chat-ai--input (body params)
  "Return the request fields that carry BODY for the endpoint of PARAMS.
Chat takes the messages; the completions and images endpoints take
BODY, its $variables filled in, as the prompt."
  (let ((endpoint (ob-chat-ai--endpoint params)))
    (if (equal endpoint "chat")
        (list (cons 'messages (ob-chat-ai--messages body params)))
      (dolist (name '(:system :session))
        (when (and (ob-chat-ai--param params name)
                   (not (equal (ob-chat-ai--param params name) "none")))
          (ob-chat-ai--user-error "%s is for the chat endpoint, not %s"
                                  name endpoint)))
      (let ((prompt (ob-chat-ai-messages-substitute
                     body (org-babel--get-vars params))))
        (if (equal endpoint "images")
            (ob-chat-ai-images-fields prompt params)
          (list (cons 'prompt prompt)))))))

(defun ob-chat-ai--messages (body params)
  "Return the messages for BODY and PARAMS.
They are the system message, the conversation so far of the block's
:session, and the turns of BODY, its $variables replaced."
  (let* ((session (ob-chat-ai--session params))
         (history (and session
                       (ob-chat-ai-messages-history
                        session (or org-babel-current-src-block-location (point)))))
         (system (or (cdr history) (ob-chat-ai--param params :system)))
         (role (format "%s" (or (ob-chat-ai--param params :role-system) "system")))
         (turns (append (car history)
                        (ob-chat-ai-messages-turns
                         (ob-chat-ai-messages-substitute
                          body (org-babel--get-vars params))))))
    (unless (member role '("system" "developer"))
      (ob-chat-ai--user-error ":role-system must be system or developer, not %s" role))
    (vconcat
     (and system `(((role . ,role) (content . ,(format "%s" system)))))
     (ob-chat-ai-files-messages
      (mapcar (lambda (turn) `((role . ,(car turn)) (content . ,(cdr turn))))
              turns)
      params))))

(defun ob-chat-ai--session (params)
  "Return the name of the :session in PARAMS, or nil when there is none."
  (let ((session (ob-chat-ai--param params :session)))
    (and session (not (equal session "none")) (format "%s" session))))

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
    ('boolean (or (ob-chat-ai--boolean value) (ob-chat-ai--json-scalar value)))
    ('strings (if (or (consp value) (vectorp value))
                  (vconcat (mapcar #'ob-chat-ai--list-item value))
                (format "%s" value)))
    ('json (if (stringp value)
               (ob-chat-ai--parse-json name value)
             (ob-chat-ai--json-scalar value)))
    ('json-or-string
     (let ((text (format "%s" value)))
       (if (or (string-prefix-p "{" text)
               (and (not (member text '("text" "json" "json_object" "json_schema")))
                    (ob-chat-ai--named-block-buffer text)))
           (ob-chat-ai--json-in name text)
         text)))))

(defun ob-chat-ai--json-in (name text)
  "Return the JSON value that header arg NAME gives as TEXT.
TEXT is the JSON itself, or the name of a block whose body is."
  (ob-chat-ai--parse-json name (if (string-prefix-p "{" (string-trim-left text))
                                   text
                                 (ob-chat-ai--named-block-body text name))))

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
             (object (ob-chat-ai--json-in :params text)))
        (unless (and (listp object) (consp (car-safe object)))
          (ob-chat-ai--user-error ":params must be a JSON object, not %s" text))
        object))))

(defun ob-chat-ai--named-block-buffer (name)
  "Return the buffer with the block named NAME in it, or nil.
That is the current buffer or, during export, the buffer being
exported, since export removes blocks marked :exports none from the
copy it evaluates."
  (seq-find (lambda (buffer)
              (and (buffer-live-p buffer)
                   (with-current-buffer buffer
                     (org-babel-find-named-block name))))
            (list (current-buffer)
                  (bound-and-true-p org-babel-exp-reference-buffer))))

(defun ob-chat-ai--named-block-body (name header-arg)
  "Return the body of the block named NAME, referred to by HEADER-ARG."
  (let ((buffer (ob-chat-ai--named-block-buffer name)))
    (unless buffer
      (ob-chat-ai--user-error "%s refers to %s, but no block has #+name: %s"
                  header-arg name name))
    (with-current-buffer buffer
      (save-excursion
        (goto-char (org-babel-find-named-block name))
        (string-trim (nth 1 (org-babel-get-src-block-info 'no-eval)))))))

(defun ob-chat-ai--api-key (params url)
  "Return the request fields that carry the key of PARAMS going to URL.
A key that the document gives (:api-key, the key itself or <<NAME>>,
a block whose body is the key) goes where the document sends it.
Otherwise auth-source is asked for the host of URL, and its key
carries that host, so that the helper sends it there and nowhere
else.  With neither, the request says where Emacs looked: keys from
the environment are the helper's, which sends them only to their
provider's own address."
  (let ((given (ob-chat-ai--param params :api-key)))
    (if given
        `((api_key . ,(ob-chat-ai--one-line-key (ob-chat-ai--document-key given))))
      (let* ((host (and url (url-host (url-generic-parse-url url))))
             (host (and (org-string-nw-p host) host))
             (key (ob-chat-ai--auth-source-key host)))
        (if key
            `((api_key . ,(ob-chat-ai--one-line-key key)) (api_key_host . ,host))
          `((looked_in . [":api-key" ,(ob-chat-ai--auth-source-place host)])))))))

(defun ob-chat-ai--auth-source-place (host)
  "Return, in words, the place in auth-source for a key for HOST."
  (let ((files (seq-filter #'stringp auth-sources)))
    (format "auth-source (machine %s%s)" (or host "of the base URL")
            (if files (concat " in " (mapconcat #'identity files ", ")) ""))))

(defun ob-chat-ai--document-key (given)
  "Return the key that :api-key GIVEN names: itself, or the body of <<NAME>>."
  (if (and (stringp given)
           (string-match "\\`<<\\([^<>()]+\\)\\(()\\)?>>\\'" given))
      (let ((name (match-string 1 given)))
        (or (ob-chat-ai--nonempty (ob-chat-ai--named-block-body name :api-key))
            (ob-chat-ai--user-error ":api-key refers to block %s, which is empty"
                                    name)))
    (format "%s" given)))

(defun ob-chat-ai--one-line-key (key)
  "Return KEY, refusing it when it has a line break in it."
  (when (string-match-p "[\n\r]" key)
    (ob-chat-ai--user-error "The API key has a line break in it"))
  key)

(defun ob-chat-ai--auth-source-key (host)
  "Return the secret that auth-source has for HOST, or nil."
  (when host
    (let* ((found (car (auth-source-search :host host :max 1 :require '(:secret))))
           (secret (plist-get found :secret)))
      (ob-chat-ai--nonempty (if (functionp secret) (funcall secret) secret)))))

(defun ob-chat-ai--nonempty (text)
  "Return TEXT trimmed, or nil when it is nil or blank."
  (and text (not (string-empty-p (string-trim text))) (string-trim text)))

(add-to-list 'org-src-lang-modes '("chat-ai" . text))

(provide 'ob-chat-ai)

;;; ob-chat-ai.el ends here
